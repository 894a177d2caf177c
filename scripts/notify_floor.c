/* The kernel's seccomp user-notification round trip on this machine, with nothing of guard in it.
 *
 * Built and run by scripts/bench_notify_floor.py (see there for why). A child installs a filter that
 * notifies getppid(2) and calls it N times; the parent answers each, with CONTINUE (the cheapest answer
 * there is: nothing read, nothing decided) or by injecting a descriptor with ADDFD and SEND (as a
 * write-open's answer does). The child times its own loop and checks every answer. Also timed: the same
 * N calls with no filter (bare), and with a filter that lets getppid through in the kernel.
 *
 *   notify_floor N MODE SYNC CPU_CHILD CPU_PARENT RECEIVERS SPIN_US
 *     MODE: bare | filter | notify (CONTINUE) | addfd;
 *     SYNC: 1 = SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP on the listener;
 *     CPU_*: the CPU each side is pinned to, or -1 for none;
 *     RECEIVERS: threads waiting in RECV at once (guard's core runs two); negative: as many, but only one
 *       of them in RECV at a time (the others wait on a mutex);
 *     SPIN_US: after an answer, poll the listener this long before waiting in RECV again (0: never).
 *   prints one line: calls per second as the child measured them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

static void die(const char *what) {
    fprintf(stderr, "notify_floor: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void pin(int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) die("sched_setaffinity");
}

static int install(int notify) {
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, notify ? SECCOMP_RET_USER_NOTIF : SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof code / sizeof code[0], code};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("no_new_privs");
    long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, notify ? SECCOMP_FILTER_FLAG_NEW_LISTENER : 0, &prog);
    if (fd < 0) die("seccomp");
    return (int)fd;
}

typedef union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } Rights;

/* A one-byte message with room for one descriptor (SCM_RIGHTS): the listener's way to the parent. */
static void rights_msg(struct msghdr *msg, struct iovec *iov, char *data, Rights *u) {
    iov->iov_base = data;
    iov->iov_len = 1;
    memset(msg, 0, sizeof *msg);
    msg->msg_iov = iov;
    msg->msg_iovlen = 1;
    msg->msg_control = u->buf;
    msg->msg_controllen = sizeof u->buf;
}

static void send_fd(int sock, int fd) {
    char data = 'L';
    struct iovec iov;
    struct msghdr msg;
    Rights u;
    rights_msg(&msg, &iov, &data, &u);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    if (sendmsg(sock, &msg, 0) != 1) die("sendmsg");
}

static int recv_fd(int sock) {
    char data;
    struct iovec iov;
    struct msghdr msg;
    Rights u;
    rights_msg(&msg, &iov, &data, &u);
    if (recvmsg(sock, &msg, 0) != 1) die("recvmsg");
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_type != SCM_RIGHTS) { errno = EPROTO; die("no listener received"); }
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define RECEIVERS_MAX 8

static int one_in_recv; /* RECEIVERS < 0: only one thread waits in RECV at a time */
static int inject = -1;  /* MODE addfd: the descriptor every answer injects (ADDFD with SEND) */
static long spin_ns;     /* after an answer, look for the next notification this long before blocking */
static pthread_mutex_t recv_lock = PTHREAD_MUTEX_INITIALIZER;

/* RECV and answer CONTINUE until the child is gone (the listener hangs up). */
static void *answer_all(void *arg) {
    int listener = *(int *)arg;
    struct seccomp_notif req;
    struct seccomp_notif_resp resp;
    for (;;) {
        memset(&req, 0, sizeof req);
        if (one_in_recv) pthread_mutex_lock(&recv_lock);
        int r = ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req);
        if (one_in_recv) pthread_mutex_unlock(&recv_lock);
        if (r != 0) {
            if (errno == EINTR) continue;
            if (errno == ENOENT) { /* taken back before we got it, or every task is gone */
                struct pollfd p = {listener, POLLIN, 0};
                if (poll(&p, 1, 0) == 1 && !(p.revents & POLLIN)) break;
                continue;
            }
            break;
        }
        if (inject >= 0) {
            struct seccomp_notif_addfd add;
            memset(&add, 0, sizeof add);
            add.id = req.id;
            add.flags = SECCOMP_ADDFD_FLAG_SEND;
            add.srcfd = (__u32)inject;
            add.newfd_flags = O_CLOEXEC;
            if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &add) < 0 && errno != ENOENT) break;
        } else {
            memset(&resp, 0, sizeof resp);
            resp.id = req.id;
            resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
            if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp) != 0 && errno != ENOENT) break;
        }
        if (spin_ns > 0) {
            double until = now() + (double)spin_ns / 1e9;
            struct pollfd p = {listener, POLLIN, 0};
            while (poll(&p, 1, 0) == 0 && now() < until) p.revents = 0;
        }
    }
    return NULL;
}


int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: notify_floor N bare|filter|notify|addfd SYNC CPU_CHILD CPU_PARENT RECEIVERS "
                        "SPIN_US\n");
        return 2;
    }
    long n = atol(argv[1]);
    const char *mode = argv[2];
    int sync = atoi(argv[3]), cpu_child = atoi(argv[4]), cpu_parent = atoi(argv[5]);
    int receivers = atoi(argv[6]);
    if (receivers < 0) { one_in_recv = 1; receivers = -receivers; }
    if (receivers < 1 || receivers > RECEIVERS_MAX) { errno = EINVAL; die("RECEIVERS"); }
    int notify = strcmp(mode, "notify") == 0 || strcmp(mode, "addfd") == 0;
    spin_ns = atol(argv[7]) * 1000;
    if (strcmp(mode, "addfd") == 0 && (inject = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) die("/dev/null");
    int sv[2], timing[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0 || pipe(timing) != 0) die("socketpair");
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        close(sv[0]);
        close(timing[0]);
        if (prctl(PR_SET_PDEATHSIG, 9) != 0) die("pdeathsig");
        pin(cpu_child);
        double start = 0;
        if (strcmp(mode, "bare") != 0) {
            int fd = install(notify);
            if (notify) {
                send_fd(sv[1], fd);
                close(fd);
                char go;
                if (read(sv[1], &go, 1) != 1) die("go");
            }
        }
        /* with MODE addfd each answer is a new descriptor, closed at once as a write-open's would be;
         * otherwise the call ran (in the kernel) and returns the parent's pid. Anything else: exit 3. */
        int fds = inject >= 0;
        long want = (long)getppid();
        for (long i = -1000; i < n; i++) {
            if (i == 0) start = now();
            long r = syscall(SYS_getppid);
            if (fds ? r < 0 || close((int)r) != 0 : r != want) {
                fprintf(stderr, "notify_floor: call %ld answered %ld\n", i, r);
                _exit(3);
            }
        }
        double rate = (double)n / (now() - start);
        if (write(timing[1], &rate, sizeof rate) != (ssize_t)sizeof rate) die("write");
        _exit(0);
    }
    close(sv[1]);
    close(timing[1]);
    pin(cpu_parent);
    if (notify) {
        int listener = recv_fd(sv[0]);
        if (sync) {
            __u64 flags = SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP;
            if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, flags) != 0) die("SYNC_WAKE_UP");
        }
        if (write(sv[0], "g", 1) != 1) die("go");
        pthread_t extra[RECEIVERS_MAX];
        for (int i = 1; i < receivers; i++)
            if (pthread_create(&extra[i], NULL, answer_all, &listener) != 0) die("pthread_create");
        answer_all(&listener);
        for (int i = 1; i < receivers; i++) pthread_join(extra[i], NULL);
    }
    double rate = 0;
    ssize_t got = read(timing[0], &rate, sizeof rate);
    int status;
    waitpid(child, &status, 0);
    if (got != (ssize_t)sizeof rate || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "notify_floor: the child failed\n");
        return 1;
    }
    printf("%.0f\n", rate);
    return 0;
}
