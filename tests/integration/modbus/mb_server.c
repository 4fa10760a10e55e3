/* A minimal Modbus TCP server on Debian's libmodbus, the independent peer for the
 * client actuator tests (Debian ships no ready-made libmodbus server binary).
 * Usage: mb_server PORT  -- listens on 127.0.0.1:PORT, answers any unit id;
 * coils 0..99 start OFF, holding registers 0..99 start at 1000 + address.
 * Prints "ready" on stdout once listening; every write is logged on stdout as
 * "write FC ADDR VALUE" (VALUE: the first value written) so a test sees what was written. */
#include <errno.h>
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/select.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s PORT\n", argv[0]); return 2; }
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", atoi(argv[1]));
    modbus_mapping_t *map = modbus_mapping_new(100, 0, 100, 0);
    if (ctx == NULL || map == NULL) { perror("libmodbus"); return 1; }
    for (int i = 0; i < 100; i++) map->tab_registers[i] = (uint16_t)(1000 + i);
    int listener = modbus_tcp_listen(ctx, 8);
    if (listener < 0) { fprintf(stderr, "listen: %s\n", modbus_strerror(errno)); return 1; }
    printf("ready\n"); fflush(stdout);
    fd_set all; FD_ZERO(&all); FD_SET(listener, &all);
    int maxfd = listener;
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    for (;;) {
        fd_set ready = all;
        if (select(maxfd + 1, &ready, NULL, NULL, NULL) < 0) { perror("select"); return 1; }
        for (int fd = 0; fd <= maxfd; fd++) {
            if (!FD_ISSET(fd, &ready)) continue;
            if (fd == listener) {
                int client = modbus_tcp_accept(ctx, &listener);
                if (client >= 0) { FD_SET(client, &all); if (client > maxfd) maxfd = client; }
                continue;
            }
            modbus_set_socket(ctx, fd);
            int rc = modbus_receive(ctx, query);
            if (rc > 0) {
                int fc = query[modbus_get_header_length(ctx)];
                if (fc == 5 || fc == 6 || fc == 15 || fc == 16) {
                    int hl = modbus_get_header_length(ctx);
                    int value = (fc == 5 || fc == 6) ? (query[hl + 3] << 8) | query[hl + 4]
                              : fc == 15 ? query[hl + 6] : (query[hl + 6] << 8) | query[hl + 7];
                    printf("write %d %d %d\n", fc, (query[hl + 1] << 8) | query[hl + 2], value);
                    fflush(stdout);
                }
                modbus_reply(ctx, query, rc, map);
            } else if (rc == -1) {
                close(fd); FD_CLR(fd, &all);
            }
        }
    }
}
