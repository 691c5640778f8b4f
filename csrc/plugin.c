/*
 * L18's plugin, built against libexample version 2 (ver-v2): it calls
 * example_feature(), which version 2 adds in the version node EXAMPLE_2,
 * so its dependency on libexample.so needs EXAMPLE_2. Its greeting() is
 * what the feature returns.
 */
extern const char *example_feature(void);

const char *greeting(void) { return example_feature(); }
