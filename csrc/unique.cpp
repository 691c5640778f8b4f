/*
 * L16's C++ library with an STB_GNU_UNIQUE symbol: the static of an inline
 * function (`calls()::n`), which the C++ rules want to be one object in the
 * whole process, whichever library defines it. g++ marks it UNIQUE
 * (`readelf -s`), and glibc then never unloads the library.
 *
 * No C++ runtime is needed (no exceptions, no guard: the static is
 * initialised by a constant), so the same object links against glibc with
 * gcc and against musl with musl-gcc.
 */
#ifndef GREETING
#error "build.rs defines GREETING"
#endif
#ifndef VERSION
#error "build.rs defines VERSION"
#endif

static const char greeting_text[32] = GREETING;

inline int &calls() {
    static int n = 0;
    return n;
}

extern "C" const char *greeting() {
    ++calls();
    return greeting_text;
}

extern "C" int example_version() { return VERSION; }
