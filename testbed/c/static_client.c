/* A TLS client linked statically with OpenSSL (built by the tests from Debian's libssl-dev archives):
 * OpenSSL's functions are in the program itself, named in its .symtab and exported nowhere.
 *
 *   static_client PORT CA_FILE PATH
 *
 * Prints "ready", waits for a line on stdin (the test starts the recorder meanwhile), then sends one
 * HTTP/1.1 POST to 127.0.0.1:PORT (server name localhost) and prints the answer's body. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fail(const char *what) {
    fprintf(stderr, "%s failed\n", what);
    ERR_print_errors_fp(stderr);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s PORT CA_FILE PATH\n", argv[0]);
        return 2;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_load_verify_locations(ctx, argv[2], NULL) != 1)
        return fail("CA");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof(line), stdin))
        return fail("stdin");

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0)
        return fail("connect");
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set1_host(ssl, "localhost");
    if (SSL_connect(ssl) != 1)
        return fail("handshake");
    char request[512];
    int n = snprintf(request, sizeof(request),
                     "POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\nConnection: close\r\n\r\n"
                     "static call", argv[3]);
    if (SSL_write(ssl, request, n) != n)
        return fail("write");
    char answer[4096];
    int total = 0, got;
    while ((got = SSL_read(ssl, answer + total, sizeof(answer) - 1 - total)) > 0)
        total += got;
    answer[total] = 0;
    char *body = strstr(answer, "\r\n\r\n");
    printf("%s\n", body ? body + 4 : answer);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    return 0;
}
