/* Preloaded into a sandboxed simulator VM's processes (LD_PRELOAD): the VM's own address stands
 * for "any" and for the loopback address, as on a machine of its own.
 *
 * Every VM shares the host's network namespace and so its port space: an image that listens on
 * 0.0.0.0 (memcached -l 0.0.0.0, a Java server on ::) would take the port on every address of the
 * host and the second VM of a cluster could not start. So bind() of the wildcard or loopback
 * address becomes a bind to $PITRIX_VM_IP (IPv6: its v4-mapped form, on a dual-stack socket);
 * connect() to 127.0.0.1 or ::1 goes to the VM's own address; and a socket that connects to
 * 127.0.0.0/8 unbound is bound to the VM's address first, so peers (metad, the other VMs) see the
 * VM's address as the source rather than 127.0.0.1. Statically linked programs (Go's) are not
 * affected: they get what they ask for. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);
typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);

static int vm_address(struct in_addr *out) {
    const char *ip = getenv("PITRIX_VM_IP");
    return ip != NULL && inet_pton(AF_INET, ip, out) == 1;
}

static void mapped(struct in6_addr *six, const struct in_addr *four) {
    memset(six, 0, sizeof *six);
    six->s6_addr[10] = 0xff;
    six->s6_addr[11] = 0xff;
    memcpy(&six->s6_addr[12], four, 4);
}

/* The address to use instead of addr (written to out), or 0 to leave addr as it is. */
static socklen_t rewrite(const struct sockaddr *addr, socklen_t len, struct sockaddr_storage *out, int wildcard) {
    struct in_addr vm;
    if (addr == NULL || !vm_address(&vm)) return 0;
    if (addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in four;
        memcpy(&four, addr, sizeof four);
        if (four.sin_addr.s_addr == htonl(INADDR_LOOPBACK) ||
            (wildcard && four.sin_addr.s_addr == htonl(INADDR_ANY))) {
            four.sin_addr = vm;
            memcpy(out, &four, sizeof four);
            return sizeof four;
        }
    } else if (addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 six;
        memcpy(&six, addr, sizeof six);
        if (IN6_IS_ADDR_LOOPBACK(&six.sin6_addr) || (wildcard && IN6_IS_ADDR_UNSPECIFIED(&six.sin6_addr))) {
            mapped(&six.sin6_addr, &vm);
            memcpy(out, &six, sizeof six);
            return sizeof six;
        }
    }
    return 0;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static bind_fn real = NULL;
    if (real == NULL) real = (bind_fn)dlsym(RTLD_NEXT, "bind");
    struct sockaddr_storage instead;
    socklen_t size = rewrite(addr, len, &instead, 1);
    if (size == 0) return real(fd, addr, len);
    if (instead.ss_family == AF_INET6) {
        int off = 0; /* a v4-mapped address needs a dual-stack socket */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    }
    return real(fd, (const struct sockaddr *)&instead, size);
}

static int unbound(int fd) {
    struct sockaddr_storage mine;
    socklen_t size = sizeof mine;
    if (getsockname(fd, (struct sockaddr *)&mine, &size) != 0) return 0;
    if (mine.ss_family == AF_INET) return ((struct sockaddr_in *)&mine)->sin_port == 0;
    if (mine.ss_family == AF_INET6) return ((struct sockaddr_in6 *)&mine)->sin6_port == 0;
    return 0;
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static connect_fn real = NULL;
    static bind_fn real_bind = NULL;
    if (real == NULL) real = (connect_fn)dlsym(RTLD_NEXT, "connect");
    if (real_bind == NULL) real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
    struct sockaddr_storage instead;
    socklen_t size = rewrite(addr, len, &instead, 0);
    const struct sockaddr *target = size ? (const struct sockaddr *)&instead : addr;
    socklen_t target_len = size ? size : len;
    struct in_addr vm;
    if (target != NULL && target->sa_family == AF_INET && vm_address(&vm) && unbound(fd)) {
        const struct sockaddr_in *dest = (const struct sockaddr_in *)target;
        if ((ntohl(dest->sin_addr.s_addr) >> 24) == 127) {
            struct sockaddr_in source;
            memset(&source, 0, sizeof source);
            source.sin_family = AF_INET;
            source.sin_addr = vm;
            real_bind(fd, (const struct sockaddr *)&source, sizeof source); /* best effort */
        }
    }
    return real(fd, target, target_len);
}
