/*
 * L16's C++ library with STB_GNU_UNIQUE symbols: the static of an inline
 * function (`calls()::n`) and the static member of a class template
 * (`Tally<int>::n`), which the C++ rules want to be one object each in the
 * whole process, whichever library defines them. g++ marks them UNIQUE
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

template <typename T>
struct Tally {
    static T n;
};
template <typename T>
T Tally<T>::n = 0;

extern "C" const char *greeting() {
    ++calls();
    ++Tally<int>::n;
    return greeting_text;
}

extern "C" int example_version() { return VERSION; }
