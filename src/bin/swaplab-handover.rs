//! Target for G01–G06 and `swaplab bench handover`: the download server that
//! hands its listening sockets over (stop/start, SCM_RIGHTS, SO_REUSEPORT,
//! exec, socket activation). See `swaplab::targets::handover`.

fn main() {
    let opts = swaplab::targets::handover::options();
    if opts.udp.enabled {
        swaplab::targets::handover_udp::main(opts)
    }
    swaplab::targets::handover::main(opts)
}
