/*
 * swaplab-sleeper: the process `swaplab bench stale` starts by the thousand.
 * Linked against libexample at start-up (DT_NEEDED), like the article's
 * `test`; it greets once, says `ready PID`, and sleeps until the harness is
 * gone or kills it.
 *
 *   swaplab-sleeper HARNESS_PID [--jit] [--daemon] [--data-view] [--exit-main]
 *
 * --jit     also map a memfd executable, as JIT compilers do: a `(deleted)`
 *           mapping that is no stale code.
 * --data-view  also map its libexample once more, whole and read-only, as
 *           rustc does with the proc-macro libraries it loads: a second
 *           mapping of the library that is no part of the loaded image.
 * --exit-main  wait on a thread of its own and end the main thread with
 *           pthread_exit: the process lives on, its main thread a zombie
 *           whose /proc/PID/maps is empty.
 * --daemon  fork and let the first process exit, so the sleeper's parent is
 *           init, as a daemon's is (needrestart judges a child by its parent
 *           instead of on its own). It stays in the harness's process group.
 *
 * It never outlives the harness: it exits at once if HARNESS_PID is not its
 * parent, and then waits on a pidfd of the harness (PR_SET_PDEATHSIG would
 * not survive the daemon fork).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

const char *greeting(void);

/* Returns once the harness has exited (its pidfd readable). */
static void *wait_for_harness(void *fd) {
    struct pollfd p = {.fd = (int)(long)fd, .events = POLLIN};
    for (;;) {
        if (poll(&p, 1, -1) > 0)
            exit(0);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s HARNESS_PID [--jit] [--daemon] [--data-view] [--exit-main]\n", argv[0]);
        return 2;
    }
    int jit = 0, daemon = 0, data_view = 0, exit_main = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--jit") == 0)
            jit = 1;
        else if (strcmp(argv[i], "--daemon") == 0)
            daemon = 1;
        else if (strcmp(argv[i], "--data-view") == 0)
            data_view = 1;
        else if (strcmp(argv[i], "--exit-main") == 0)
            exit_main = 1;
        else {
            fprintf(stderr, "unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    pid_t harness = (pid_t)atol(argv[1]);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != harness)
        return 1;
    int watch = (int)syscall(SYS_pidfd_open, harness, 0);
    if (watch < 0) {
        perror("pidfd_open");
        return 1;
    }
    if (daemon) {
        pid_t child = fork();
        if (child < 0) {
            perror("fork");
            return 1;
        }
        if (child > 0)
            _exit(0);
    }
    if (jit) {
        int fd = memfd_create("swaplab-jit", 0);
        if (fd < 0 || ftruncate(fd, 4096) != 0 ||
            mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0) == MAP_FAILED) {
            perror("memfd");
            return 1;
        }
        close(fd);
    }
    if (data_view) {
        Dl_info lib;
        struct stat st;
        int fd = dladdr((void *)greeting, &lib) ? open(lib.dli_fname, O_RDONLY) : -1;
        if (fd < 0 || fstat(fd, &st) != 0 ||
            mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0) == MAP_FAILED) {
            perror("data view");
            return 1;
        }
        close(fd);
    }
    printf("ready %d %s\n", (int)getpid(), greeting());
    fflush(stdout);
    if (exit_main) {
        pthread_t waiter;
        if (pthread_create(&waiter, NULL, wait_for_harness, (void *)(long)watch) != 0) {
            perror("pthread_create");
            return 1;
        }
        pthread_exit(NULL);
    }
    wait_for_harness((void *)(long)watch);
    return 0;
}
