// The findings, by series: the module that defines them, then each ID with
// the name of the test that proves it (read by src/findings/mod.rs and
// tests/findings.rs).
index! {
    /// Article 000: replacing a shared library under running processes.
    libs {
        L01 l01_a_process_started_after_the_replacement_runs_the_new_library,
        L02 l02_a_running_process_keeps_the_old_library_marked_deleted,
        L03 l03_old_and_new_run_side_by_side_and_grep_finds_both,
        L04 l04_forked_children_keep_the_old_library,
        L05 l05_exec_after_the_replacement_loads_the_new_library,
        L06 l06_dlopen_after_the_last_dlclose_loads_the_new_library,
        L07 l07_dlopen_of_the_same_path_with_a_handle_open_returns_the_old_library,
        L08 l08_a_pinned_library_survives_dlclose_and_keeps_the_old_code,
        L09 l09_dlopen_of_a_copy_at_a_new_path_loads_the_new_version_beside_the_old,
        L10 l10_musl_dlclose_never_unloads_and_dlopen_matches_by_inode,
        L11 l11_how_the_file_is_replaced_decides_what_running_processes_see,
        L12 l12_a_running_executable_cannot_be_written_but_can_be_replaced,
        L13 l13_an_unprivileged_user_cannot_read_another_users_maps,
    }
    /// Series 2 of the loader: a library preloaded with LD_PRELOAD.
    preload { L14 l14_a_preloaded_library_behaves_like_a_linked_one_across_a_replacement }
    /// Series 2 of the loader: sonames and the link that names the current file.
    sonames { L15 l15_a_process_maps_the_file_its_soname_named_and_how_the_link_is_switched_decides_who_starts }
    /// Series 2 of the loader: libraries that dlclose does not unload.
    pinning { L16 l16_unique_symbols_and_thread_local_destructors_pin_a_library_so_its_reload_keeps_the_old_code }
    /// Series 2 of the loader: dlmopen, a second copy in a namespace of its own.
    namespaces { L17 l17_dlmopen_loads_the_new_version_beside_the_old_at_the_same_path_until_the_namespaces_run_out }
    /// Series 2 of the loader: symbol versions, and the plugin that breaks after an upgrade.
    versions { L18 l18_a_process_on_the_old_library_cannot_load_a_plugin_built_for_the_new_one }
    /// L18's question with the real C library, from the matrix's Debian roots.
    real_glibc { L18C l18c_after_a_c_library_update_a_running_process_fails_its_first_lookups }
    /// Article 001: upgrading the executable on the fly.
    upgrade {
        U01 u01_a_child_forked_after_the_executable_is_replaced_runs_the_old_program,
        U02 u02_execve_runs_the_new_file_and_keeps_pid_and_open_fds,
        U03 u03_the_nginx_style_upgrade_keeps_every_connection,
        U04 u04_usr2_is_ignored_while_an_upgrade_is_in_progress,
        U05 u05_rollback_brings_the_old_generation_back_without_errors,
        U06 u06_a_failed_exec_leaves_the_old_master_serving,
        U07 u07_a_library_update_needs_the_exec_not_a_worker_restart,
        U08 u08_real_nginx_upgrades_and_rolls_back_without_errors,
    }
    /// Article 002: graceful restart by passing the listening socket.
    graceful {
        G01 g01_a_second_bind_fails_with_eaddrinuse_unless_reuseport,
        G02 g02_a_stop_start_restart_refuses_and_truncates,
        G03 g03_an_scm_rights_handover_restarts_without_a_client_error,
        G04 g04_queued_connections_wait_while_any_fd_holds_the_socket,
        G05 g05_a_reuseport_overlap_drops_queued_connections_unless_migrated,
        G06 g06_handover_strategies_side_by_side,
        G07 g07_ipv6_link_local_needs_a_scope_id,
    }
    /// Article 002 in the field: requests on keep-alive connections across a hand-over.
    keep_alive { G08 g08_keep_alive_requests_fail_across_a_handover_unless_the_drain_or_the_client_is_careful }
    /// Article 002 in the field: UDP services.
    udp { G09 g09_a_reuseport_handover_loses_the_datagrams_queued_on_the_old_socket_and_scm_rights_none }
    /// Article 002 in the field: the reloads of real nginx, haproxy and apache2.
    real_servers { G10 g10_real_servers_fail_no_new_connection_across_reloads }
    /// Article 000's question answered: which running processes must be restarted.
    detect {
        D01 d01_swaplab_stale_finds_exactly_the_processes_to_restart,
    }
    /// The same question after a real package upgrade, done by dpkg and by rpm.
    packages {
        D02 d02_a_real_dpkg_upgrade_is_attributed_to_its_package_and_grouped,
        D03 d03_a_real_rpm_upgrade_is_attributed_from_the_rpm_database,
    }
}
