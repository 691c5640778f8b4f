/*
 * L16's C++ library with a thread_local object that has a destructor: the
 * first call on a thread constructs it and registers its destructor for
 * that thread's exit (__cxa_thread_atexit, from libstdc++, which asks
 * glibc's __cxa_thread_atexit_impl). It has no UNIQUE symbol (static,
 * internal linkage), so whatever keeps it mapped is the thread_local.
 */
#ifndef GREETING
#error "build.rs defines GREETING"
#endif
#ifndef VERSION
#error "build.rs defines VERSION"
#endif

static const char greeting_text[32] = GREETING;

namespace {
struct Counter {
    int n;
    Counter() : n(0) {}
    ~Counter() { n = -1; }
};
}  // namespace

static thread_local Counter counter;

extern "C" const char *greeting() {
    counter.n++;
    return greeting_text;
}

extern "C" int example_version() { return VERSION; }
