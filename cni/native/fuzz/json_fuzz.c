/*
 * Fuzz target for the native CNI shim's JSON reader (cni/native/shim.c), which runs as root
 * on every pod start and reads whatever the runtime (or anyone able to run it) puts on stdin.
 *
 * The shim's own source is included with its main() renamed, so the fuzzer exercises exactly
 * the functions the shim runs: json_document() on the whole input, then, for an object, the
 * member lookups the shim does (cniVersion, serverSocket, result/error/code as on a reply),
 * and buf_json_string() as the shim encodes the environment and the config.
 *
 * Two builds (tests/functional/cni/test_native_fuzz.py):
 *   clang -fsanitize=fuzzer,address,undefined   libFuzzer, coverage-guided, crashes/leaks/UB fail
 *   cc -DOVNK_FUZZ_DRIVER                        reads files and prints, per file, what the shim
 *                                                concluded, for comparison with the Python shim
 */
#define main ovnk_shim_main
#include "../shim.c"
#undef main

#include <stdint.h>

/* What the shim concludes from one netconf: its JSON type, cniVersion and serverSocket as the
 * shim would use them (NULL: absent or not a string). */
struct verdict {
    enum json_type type;
    const char *error;
    char *cni_version;
    char *server_socket;
};

static struct verdict read_netconf(const char *s, size_t n) {
    struct verdict v = {0};
    struct json j;
    v.type = json_document(&j, s, n);
    v.error = j.error;
    if (v.type == J_OBJECT) {
        size_t start = strspn(s, " \t\n\r");
        v.cni_version = json_string_member(s, n, start, "cniVersion");
        v.server_socket = json_string_member(s, n, start, "serverSocket");
        /* The reply path: {"result": ...} or {"error": {"code": <int>, ...}}. */
        struct span value, code;
        if (json_member(s, n, start, "error", &value) && value.type == J_OBJECT)
            json_member(s, n, value.start, "code", &code);
        json_member(s, n, start, "result", &value);
    }
    return v;
}

#ifndef OVNK_FUZZ_DRIVER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* The shim's buffers are NUL-terminated (buf_add): the reader may rely on it. */
    char *copy = malloc(size + 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    struct verdict v = read_netconf(copy, size);
    free(v.cni_version);
    free(v.server_socket);
    struct buf encoded = {0};
    buf_json_string(&encoded, copy, size);
    /* What the shim encodes must read back as one valid JSON string. */
    struct json check;
    if (json_document(&check, encoded.data, encoded.len) != J_STRING) abort();
    free(encoded.data);
    free(copy);
    return 0;
}
#else
static void print_hex(const char *value) {
    if (!value) {
        fputs("-", stdout);
        return;
    }
    fputs("=", stdout);
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) printf("%02x", *p);
}

/* One line per file: "<path>\t<type>\t<cniVersion>\t<serverSocket>\t<error>", values as
 * "-" (absent) or "=" and hex bytes. */
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            perror(argv[i]);
            return 2;
        }
        struct buf in = {0};
        char chunk[65536];
        size_t got;
        while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0) buf_add(&in, chunk, got);
        fclose(f);
        buf_add(&in, "", 0);
        struct verdict v = read_netconf(in.data, in.len);
        printf("%s\t%s\t", argv[i], v.type == J_INVALID ? "invalid" : json_type_name(v.type));
        print_hex(v.cni_version);
        fputs("\t", stdout);
        print_hex(v.server_socket);
        printf("\t%s\n", v.error ? v.error : "");
        free(v.cni_version);
        free(v.server_socket);
        free(in.data);
    }
    return 0;
}
#endif
