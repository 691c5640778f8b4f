/*
 * libexample: the shared library of the first article, in every variant the
 * experiments need. build.rs compiles this one file several times:
 *
 *   v1          GREETING "Hell World"  (the article's first version)
 *   v2          GREETING "Hello World" (the fixed version); byte-for-byte the
 *               same layout as v1, so an in-place write swaps code silently
 *   v2-layout   "Hello World" with a different layout: many extra functions
 *               placed before greeting(), so every offset moves
 *   short       "Hello World", built small (no separate code segment, no
 *               build-id, stripped) so the file is shorter than v1's mappings
 *   v1-nodelete "Hell World" linked with -z nodelete (never unloaded)
 *   so1-v1/-v2  v1 and v2 with the soname libexample.so.1, installed as
 *               libexample.so.1.0.1 and .2 behind a link (L15)
 *   tls-v1/-v2  v1 and v2 with a C __thread counter, no destructor (L16)
 *   ver-v1      v1 with the version node EXAMPLE_1 (libexample-1.map)
 *   ver-v2      v2 with EXAMPLE_1 and EXAMPLE_2, which adds
 *               example_feature() (libexample-2.map; L18)
 *
 * greeting() returns the text (the targets print it with a pid prefix) and
 * hello() prints it the article's way for C callers.
 */
#include <stdio.h>

#ifndef GREETING
#error "build.rs defines GREETING"
#endif
#ifndef VERSION
#error "build.rs defines VERSION"
#endif

/* A fixed-size array: v1 and v2 differ in these bytes only, never in layout. */
static const char greeting_text[32] = GREETING;

#ifdef MOVED_LAYOUT
/* Padding functions that push greeting() and its text to other offsets. */
#define PAD(n)                                                                 \
    int example_pad_##n(int x) {                                               \
        volatile int acc = x;                                                  \
        for (int i = 0; i < (n) + 3; i++) acc = acc * 31 + i;                  \
        return acc;                                                            \
    }
#define PAD8(a) PAD(a##0) PAD(a##1) PAD(a##2) PAD(a##3) PAD(a##4) PAD(a##5) PAD(a##6) PAD(a##7)
PAD8(1) PAD8(2) PAD8(3) PAD8(4) PAD8(5) PAD8(6) PAD8(7) PAD8(8)
static const char moved_table[8192] = "v2-layout: padding that moves .rodata";
const char *example_table(void) { return moved_table; }
#endif

#ifdef THREAD_COUNTER
/* A thread-local counter without a destructor: nothing to run at thread
 * exit, so nothing for the loader to wait for before unloading. */
static __thread int calls;
const char *greeting(void) {
    calls++;
    return greeting_text;
}
#else
const char *greeting(void) { return greeting_text; }
#endif

#ifdef FEATURE
/* What version 2 adds: in the version node EXAMPLE_2 (libexample-2.map). */
const char *example_feature(void) { return "the feature of version 2"; }
#endif

int example_version(void) { return VERSION; }

void hello(void) {
    printf("%s\n", greeting_text);
    fflush(stdout);
}
