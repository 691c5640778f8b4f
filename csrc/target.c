/*
 * The C twin of swaplab's target programs (src/targets/agent.rs): the same command
 * protocol, one command per line on stdin, one answer line per command, so
 * the same experiments drive it. It exists to run the targets on another C
 * library than the one swaplab itself is built for: build.rs compiles it
 * with musl-gcc, and `swaplab matrix` compiles it inside each Debian root
 * with that release's own gcc and glibc.
 *
 * One source, several programs (the -D flags build.rs and the matrix pass):
 *
 *   swaplab-plain, swaplab-fork   -DLINKED, linked with -lexample (DT_NEEDED)
 *   swaplab-soname                -DLINKED, linked with libexample.so.1 (L15)
 *   swaplab-dlopen                not linked against libexample (dlopen only)
 *   swaplab-app, swaplab-app-2    not linked, -DBUILD="1" / -DBUILD="2"
 *
 * Arguments: none (the command loop), `--once` and `--hold` as the Rust
 * agent, and `--libc`, which prints `libc pid=N: glibc 2.31` (the running
 * glibc's own gnu_get_libc_version) and exits.
 *
 * The commands and their answers are listed in src/targets/protocol.rs. Two
 * are the twin's alone (L18C runs it on a Debian root's glibc):
 *
 *   iconv TO FROM   iconv_open(TO, FROM) and a conversion of "swaplab":
 *                   `iconv pid=N ok bytes=K` or `iconv pid=N failed: TEXT`
 *   user NAME       getpwnam(NAME): `user pid=N name=NAME uid=U`, or
 *                   `user pid=N name=NAME missing: TEXT`
 *
 * Every line is
 * written with one write(2), so lines of a parent and its children never
 * interleave inside a line. Every process (and every child it forks) sets
 * PR_SET_PDEATHSIG to SIGKILL, so none outlives its parent.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <iconv.h>
#include <pthread.h>
#include <pwd.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <gnu/libc-version.h>
#endif

#ifndef BUILD
#define BUILD "1"
#endif
#ifndef SHM_EXEC
#define SHM_EXEC 0100000
#endif
#ifndef RTLD_NODELETE
#define RTLD_NODELETE 0x1000
#endif

#ifdef LINKED
extern const char *greeting(void);
#endif

#define MAX_HANDLES 256
#define MAX_CHILDREN 256
#define MAX_PIPES 64

static int me;
static char exe[4096];
static char memory[4096];
static int remembered;
static void *handles[MAX_HANDLES + 1];
static int next_handle = 1;
static pid_t children[MAX_CHILDREN];
static int nchildren;
static int pipes[MAX_PIPES][2];
static int npipes;

/* One line, one write(2). */
static void emit(const char *fmt, ...) {
    char line[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';
    for (int off = 0; off < n;) {
        ssize_t w = write(1, line + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        off += w;
    }
}

static void die_with_parent(void) { prctl(PR_SET_PDEATHSIG, SIGKILL); }

static void hold(void) {
    for (;;) pause();
}

static void version(void) { emit("version pid=%d: %s", me, BUILD); }

static void call(void) {
#ifdef LINKED
    emit("greeting pid=%d: %s", me, greeting());
#else
    emit("error pid=%d: this program is not linked against libexample", me);
#endif
}

/* What a new process says first. */
static void hello(void) {
#ifdef LINKED
    call();
#else
    version();
#endif
}

static void reap(void) {
    for (int i = 0; i < nchildren; i++) {
        kill(children[i], SIGKILL);
        waitpid(children[i], NULL, 0);
    }
    nchildren = 0;
}

static void keep_child(pid_t c) {
    if (nchildren < MAX_CHILDREN) children[nchildren++] = c;
}

static void fork_child(void) {
    pid_t c = fork();
    if (c < 0) {
        emit("error pid=%d: fork: %s", me, strerror(errno));
    } else if (c == 0) {
        die_with_parent();
        me = getpid();
        nchildren = 0;
        hello();
        hold();
    } else {
        keep_child(c);
        emit("forked pid=%d child=%d", me, c);
    }
}

static void spawn_child(void) {
    pid_t c = fork();
    if (c < 0) {
        emit("error pid=%d: fork: %s", me, strerror(errno));
    } else if (c == 0) {
        die_with_parent();
        char *argv[] = {exe, "--hold", NULL};
        execv(exe, argv);
        emit("error pid=%d: exec: %s", getpid(), strerror(errno));
        _exit(127);
    } else {
        keep_child(c);
        emit("spawned pid=%d child=%d", me, c);
    }
}

static void exec_self(void) {
    emit("exec pid=%d", me);
    char *argv[] = {exe, NULL};
    execv(exe, argv);
    emit("error pid=%d: exec: %s", me, strerror(errno));
}

static void open_lib(char **w, int n) {
    int flags = RTLD_NOW, global = 0;
    for (int i = 2; i < n; i++) {
        if (!strcmp(w[i], "nodelete")) flags |= RTLD_NODELETE;
        else if (!strcmp(w[i], "global")) global = 1;
        else if (!strcmp(w[i], "lazy")) flags = (flags & ~RTLD_NOW) | RTLD_LAZY;
        else {
            emit("error pid=%d: unknown open option `%s`", me, w[i]);
            return;
        }
    }
    flags |= global ? RTLD_GLOBAL : RTLD_LOCAL;
    if (next_handle > MAX_HANDLES) {
        emit("error pid=%d: too many handles", me);
        return;
    }
    void *h = dlopen(w[1], flags);
    if (!h) {
        emit("error pid=%d: dlopen: %s", me, dlerror());
        return;
    }
    int k = next_handle++;
    handles[k] = h;
    emit("opened pid=%d h=%d handle=%#lx", me, k, (unsigned long)h);
}

static void noload(const char *path) {
    void *h = dlopen(path, RTLD_LAZY | RTLD_NOLOAD);
    if (!h || next_handle > MAX_HANDLES) {
        emit("noload pid=%d loaded=no", me);
        return;
    }
    int k = next_handle++;
    handles[k] = h;
    emit("noload pid=%d loaded=yes h=%d handle=%#lx", me, k, (unsigned long)h);
}

static int handle_of(const char *s) {
    char *end;
    long k = strtol(s, &end, 10);
    if (*end || k < 1 || k >= next_handle || !handles[k]) {
        emit("error pid=%d: no handle %s", me, s);
        return 0;
    }
    return (int)k;
}

static void callh(const char *s) {
    int k = handle_of(s);
    if (!k) return;
    const char *(*f)(void);
    *(void **)&f = dlsym(handles[k], "greeting");
    if (!f) {
        emit("error pid=%d: dlsym: %s", me, dlerror());
        return;
    }
    emit("greeting pid=%d h=%d fn=%#lx: %s", me, k, (unsigned long)f, f());
}

#define MAX_THREADS 16
static pthread_t threads[MAX_THREADS];
static int nthreads;
static pthread_mutex_t release_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t release_cond = PTHREAD_COND_INITIALIZER;
static int released;

struct thread_call {
    int k;
    const char *(*f)(void);
};

/* Calls greeting() and answers, then waits until `join` releases it. */
static void *call_and_wait(void *arg) {
    struct thread_call c = *(struct thread_call *)arg;
    free(arg);
    long tid = (long)syscall(SYS_gettid);
    const char *text = c.f();
    emit("greeting pid=%d h=%d fn=%#lx thread=%ld: %s", me, c.k, (unsigned long)c.f, tid, text);
    pthread_mutex_lock(&release_lock);
    while (!released) pthread_cond_wait(&release_cond, &release_lock);
    pthread_mutex_unlock(&release_lock);
    return NULL;
}

/* greeting() on a thread of its own that stays alive until `join` (L16:
 * what a library's thread-locals see of a thread's life). Nothing forks
 * while such a thread lives: a child would have the list, not the threads. */
static void thread_call(const char *s) {
    int k = handle_of(s);
    if (!k) return;
    struct thread_call *c = calloc(1, sizeof *c);
    if (!c || nthreads >= MAX_THREADS) {
        free(c);
        emit("error pid=%d: too many threads", me);
        return;
    }
    c->k = k;
    *(void **)&c->f = dlsym(handles[k], "greeting");
    if (!c->f) {
        free(c);
        emit("error pid=%d: dlsym: %s", me, dlerror());
        return;
    }
    pthread_mutex_lock(&release_lock);
    released = 0;
    pthread_mutex_unlock(&release_lock);
    int e = pthread_create(&threads[nthreads], NULL, call_and_wait, c);
    if (e) {
        free(c);
        emit("error pid=%d: thread: %s", me, strerror(e));
        return;
    }
    nthreads++;
}

static void join_threads(void) {
    pthread_mutex_lock(&release_lock);
    released = 1;
    pthread_cond_broadcast(&release_cond);
    pthread_mutex_unlock(&release_lock);
    int n = nthreads;
    for (int i = 0; i < n; i++) pthread_join(threads[i], NULL);
    nthreads = 0;
    emit("joined pid=%d threads=%d", me, n);
}

/* dlmopen into a new link-map namespace: glibc's alone. */
static void mopen(const char *path) {
#ifdef __GLIBC__
    if (next_handle > MAX_HANDLES) {
        emit("error pid=%d: too many handles", me);
        return;
    }
    void *h = dlmopen(LM_ID_NEWLM, path, RTLD_NOW);
    if (!h) {
        emit("error pid=%d: dlmopen: %s", me, dlerror());
        return;
    }
    Lmid_t lmid = -1;
    if (dlinfo(h, RTLD_DI_LMID, &lmid) != 0) lmid = -1;
    int k = next_handle++;
    handles[k] = h;
    emit("opened pid=%d h=%d handle=%#lx lmid=%ld", me, k, (unsigned long)h, (long)lmid);
#else
    (void)path;
    emit("error pid=%d: dlmopen: this C library has none", me);
#endif
}

static void convert(const char *to, const char *from) {
    iconv_t cd = iconv_open(to, from);
    if (cd == (iconv_t)-1) {
        emit("iconv pid=%d failed: %s", me, strerror(errno));
        return;
    }
    char in[] = "swaplab", out[64];
    char *ip = in, *op = out;
    size_t il = strlen(in), ol = sizeof out;
    size_t r = iconv(cd, &ip, &il, &op, &ol);
    int e = errno;
    iconv_close(cd);
    if (r == (size_t)-1) emit("iconv pid=%d failed: %s", me, strerror(e));
    else emit("iconv pid=%d ok bytes=%d", me, (int)(op - out));
}

static void user(const char *name) {
    errno = 0;
    struct passwd *pw = getpwnam(name);
    if (pw) emit("user pid=%d name=%s uid=%d", me, name, (int)pw->pw_uid);
    else emit("user pid=%d name=%s missing: %s", me, name, errno ? strerror(errno) : "no entry");
}

static void close_lib(const char *s) {
    int k = handle_of(s);
    if (!k) return;
    void *h = handles[k];
    handles[k] = NULL;
    if (dlclose(h)) {
        emit("error pid=%d: dlclose: %s", me, dlerror());
        return;
    }
    emit("closed pid=%d h=%d", me, k);
}

/* How many file-backed mappings another process has (L13). */
static void peek(const char *s) {
    char path[64], buf[65536];
    int of = atoi(s);
    snprintf(path, sizeof path, "/proc/%d/maps", of);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (n < 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        emit("peek pid=%d of=%d denied: %s (os error %d)", me, of, strerror(e), e);
        return;
    }
    int count = 0;
    for (;;) {
        buf[n] = 0;
        for (char *l = buf; (l = strstr(l, " /")); l++) count++;
        n = read(fd, buf, sizeof buf - 1);
        if (n <= 0) break;
    }
    close(fd);
    emit("peek pid=%d of=%d ok mappings=%d", me, of, count);
}

static int map_exec(int fd, size_t len, int flags) {
    return mmap(NULL, len, PROT_READ | PROT_EXEC, flags, fd, 0) != MAP_FAILED;
}

/* The pseudo-file mappings `swaplab stale` must not report. */
static void pseudo(void) {
    size_t len = 4096;
    int memfd = 0, sysv = 0, devzero = 0, anon;
    int fd = (int)syscall(SYS_memfd_create, "swaplab-jit", 0);
    if (fd >= 0) {
        memfd = ftruncate(fd, (off_t)len) == 0 && map_exec(fd, len, MAP_SHARED);
        close(fd);
    }
    /* SHM_EXEC needs the x bit (root alone bypasses it). */
    int id = shmget(IPC_PRIVATE, len, IPC_CREAT | 0700);
    if (id >= 0) {
        sysv = shmat(id, NULL, SHM_EXEC | SHM_RDONLY) != (void *)-1;
        shmctl(id, IPC_RMID, NULL);
    }
    fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        devzero = map_exec(fd, len, MAP_SHARED);
        close(fd);
    }
    anon = map_exec(-1, len, MAP_PRIVATE | MAP_ANONYMOUS);
    emit("pseudo pid=%d memfd=%s sysv=%s devzero=%s anon=%s", me, memfd ? "yes" : "no",
         sysv ? "yes" : "no", devzero ? "yes" : "no", anon ? "yes" : "no");
}

static void map_data(const char *path) {
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        emit("error pid=%d: open %s: %s", me, path, strerror(errno));
        if (fd >= 0) close(fd);
        return;
    }
    size_t len = st.st_size > 0 ? (size_t)st.st_size : 1;
    void *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        emit("error pid=%d: mmap %s: %s", me, path, strerror(errno));
        return;
    }
    emit("mapped pid=%d", me);
}

static void make_pipe(char **w, int n) {
    int cloexec = n == 2 && !strcmp(w[1], "cloexec");
    if (n > 2 || (n == 2 && !cloexec)) {
        emit("error pid=%d: unknown pipe options", me);
        return;
    }
    if (npipes >= MAX_PIPES) {
        emit("error pid=%d: too many pipes", me);
        return;
    }
    int fds[2];
    if (pipe2(fds, cloexec ? O_CLOEXEC : 0) < 0) {
        emit("error pid=%d: pipe2: %s", me, strerror(errno));
        return;
    }
    pipes[npipes][0] = fds[0];
    pipes[npipes][1] = fds[1];
    npipes++;
    emit("pipe pid=%d r=%d w=%d cloexec=%s", me, fds[0], fds[1], cloexec ? "yes" : "no");
}

static void command(char **w, int n) {
    const char *c = w[0];
    int need = !strcmp(c, "open") || !strcmp(c, "noload") || !strcmp(c, "callh") ||
               !strcmp(c, "close") || !strcmp(c, "peek") || !strcmp(c, "map") ||
               !strcmp(c, "thread") || !strcmp(c, "mopen") || !strcmp(c, "user");
    if (!strcmp(c, "iconv") && n < 3) {
        emit("error pid=%d: `iconv` needs TO and FROM", me);
        return;
    }
    if (need && n < 2) {
        emit("error pid=%d: `%s` needs an argument", me, c);
        return;
    }
    if (!strcmp(c, "call")) call();
    else if (!strcmp(c, "version")) version();
    else if (!strcmp(c, "remember")) {
        memory[0] = 0;
        for (int i = 1; i < n; i++) {
            if (i > 1) strncat(memory, " ", sizeof memory - strlen(memory) - 1);
            strncat(memory, w[i], sizeof memory - strlen(memory) - 1);
        }
        remembered = 1;
        emit("remembered pid=%d: %s", me, memory);
    } else if (!strcmp(c, "recall")) emit("recall pid=%d: %s", me, remembered ? memory : "(nothing)");
    else if (!strcmp(c, "pipe")) make_pipe(w, n);
    else if (!strcmp(c, "fork")) fork_child();
    else if (!strcmp(c, "spawn")) spawn_child();
    else if (!strcmp(c, "exec")) exec_self();
    else if (!strcmp(c, "kill-children")) {
        int k = nchildren;
        reap();
        emit("reaped pid=%d children=%d", me, k);
    } else if (!strcmp(c, "open")) open_lib(w, n);
    else if (!strcmp(c, "noload")) noload(w[1]);
    else if (!strcmp(c, "callh")) callh(w[1]);
    else if (!strcmp(c, "close")) close_lib(w[1]);
    else if (!strcmp(c, "thread")) thread_call(w[1]);
    else if (!strcmp(c, "join")) join_threads();
    else if (!strcmp(c, "mopen")) mopen(w[1]);
    else if (!strcmp(c, "iconv")) convert(w[1], w[2]);
    else if (!strcmp(c, "user")) user(w[1]);
    else if (!strcmp(c, "peek")) peek(w[1]);
    else if (!strcmp(c, "pseudo")) pseudo();
    else if (!strcmp(c, "map")) map_data(w[1]);
    else emit("error pid=%d: unknown command `%s`", me, c);
}

int main(int argc, char **argv) {
    die_with_parent();
    signal(SIGCHLD, SIG_IGN);
    me = getpid();
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0) strcpy(exe, "/proc/self/exe");
    else exe[n] = 0;
    emit("ready pid=%d", me);
    if (argc > 1) {
        if (!strcmp(argv[1], "--once")) {
            hello();
            return 0;
        }
        /* Which C library this program runs on, as it says itself. */
        if (!strcmp(argv[1], "--libc")) {
#ifdef __GLIBC__
            emit("libc pid=%d: glibc %s", me, gnu_get_libc_version());
#else
            emit("libc pid=%d: not glibc", me);
#endif
            return 0;
        }
        if (!strcmp(argv[1], "--hold")) {
            hello();
            hold();
        }
        emit("error pid=%d: unknown argument %s", me, argv[1]);
        return 2;
    }
    char line[8192];
    while (fgets(line, sizeof line, stdin)) {
        char *w[64];
        int k = 0;
        for (char *t = strtok(line, " \t\r\n"); t && k < 64; t = strtok(NULL, " \t\r\n")) w[k++] = t;
        if (!k) continue;
        if (!strcmp(w[0], "exit")) {
            reap();
            emit("bye pid=%d", me);
            return 0;
        }
        command(w, k);
    }
    reap();
    return 0;
}
