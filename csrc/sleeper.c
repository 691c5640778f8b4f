/*
 * swaplab-sleeper: the process `swaplab bench stale` starts by the thousand.
 * Linked against libexample at start-up (DT_NEEDED), like the article's
 * `test`; it greets once, says `ready PID`, and sleeps until it is killed.
 *
 *   swaplab-sleeper PARENT_PID [--jit]
 *
 * It dies with its parent (PR_SET_PDEATHSIG), and exits at once if PARENT_PID
 * is already gone. With --jit it also maps a memfd executable, as JIT
 * compilers do: a `(deleted)` mapping that is no stale code.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

const char *greeting(void);

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PARENT_PID [--jit]\n", argv[0]);
        return 2;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != (pid_t)atol(argv[1]))
        return 1;
    if (argc > 2 && strcmp(argv[2], "--jit") == 0) {
        int fd = memfd_create("swaplab-jit", 0);
        if (fd < 0 || ftruncate(fd, 4096) != 0 ||
            mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0) == MAP_FAILED) {
            perror("memfd");
            return 1;
        }
        close(fd);
    }
    printf("ready %d %s\n", (int)getpid(), greeting());
    fflush(stdout);
    for (;;)
        pause();
}
