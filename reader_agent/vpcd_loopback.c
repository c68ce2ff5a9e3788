/*
 * vpcd_loopback.c: preloaded into the pcscd that CardBus starts (LD_PRELOAD), so the vpcd
 * driver's card ports listen on 127.0.0.1 instead of every interface.
 *
 * vsmartcard's vpcd driver (ifd-vpcd, src/vpcd/vpcd.c, opensock()) binds its card socket to
 * INADDR_ANY with no setting to change it: DEVICENAME /dev/null:PORT only picks the port, and
 * DEVICENAME HOST:PORT is not an address to listen on but vpcd's "reversed" mode, where vpcd
 * connects out to a card listening at HOST:PORT. This wrapper turns a bind() to the IPv4 or
 * IPv6 wildcard address into a bind() to the loopback address; every other bind() is passed
 * through unchanged. pcscd's own socket is a Unix socket and is not affected.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    static bind_fn real_bind;

    if (!real_bind)
        real_bind = (bind_fn) dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= (socklen_t) sizeof(struct sockaddr_in)) {
        struct sockaddr_in in4;

        memcpy(&in4, addr, sizeof in4);
        if (in4.sin_addr.s_addr == htonl(INADDR_ANY)) {
            in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real_bind(fd, (const struct sockaddr *) &in4, sizeof in4);
        }
    }
    if (addr && addr->sa_family == AF_INET6 && len >= (socklen_t) sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6;

        memcpy(&in6, addr, sizeof in6);
        if (memcmp(&in6.sin6_addr, &in6addr_any, sizeof in6addr_any) == 0) {
            in6.sin6_addr = in6addr_loopback;
            return real_bind(fd, (const struct sockaddr *) &in6, sizeof in6);
        }
    }
    return real_bind(fd, addr, len);
}
