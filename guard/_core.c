/* guard._core: the seccomp supervisor's compiled fast path, and the session spool's one writer.
 *
 * Why: the Python supervisor answers a notification in 100-200 us; file-heavy work (pip install, git
 * add, tar x) sends tens of thousands of write-opens, so guard cost 2-3x bare. Most of them are plain
 * names in a directory where the policy's answer is the same for every plain name: the Python engine
 * proves that (guard.sandbox.fastpath) and hands this core, per directory, the decision's record
 * already rendered. This core then does, in C and without the GIL, exactly what the Python supervisor
 * does for such an open:
 *   - read the path from the task's memory, re-validate the notification (the task is still the one
 *     that asked);
 *   - resolve the directory without following any symlink (openat2 RESOLVE_NO_SYMLINKS |
 *     RESOLVE_NO_MAGICLINKS, from the task's cwd, its dirfd or its root), and vouch for its canonical
 *     path in the task's view (readlink, then the same path reopened from the task's root must be the
 *     same inode);
 *   - look the directory up in the table; check the final name against every non-trivial glob segment
 *     of the policy (a name no rule speaks of gets the directory's answer);
 *   - append the record to the spool with one write(2) (durable against any guard crash) before acting;
 *   - open or create the file itself, as the task (its fsuid/fsgid, its umask, none of our
 *     capabilities), never following the final name, refusing set-id modes, deferring O_TRUNC until the
 *     file is known to be a regular file with one name; and install the descriptor in the task with
 *     SECCOMP_IOCTL_NOTIF_ADDFD (SEND), so the task gets the very file that was judged.
 * Anything else (a symlink on the way, a ".." that does not lead where the path names lexically, a name
 * that needs escaping, a directory not in the table, a special file, a hard-linked file, any error before
 * the record) is handed back to the Python supervisor unchanged, which decides it the slow, general way.
 * Nothing here decides policy: the table holds only what the engine computed.
 *
 * The spool: both the fast path and Python's SpoolWriter append through Core.append, so record
 * numbers come from one counter under one lock.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <dirent.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <linux/magic.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define PATH_LIMIT 4096
#define MAX_GLOBS 4096
#define OP_WRITE 0
#define OP_READ 1

#ifndef SECCOMP_ADDFD_FLAG_SEND
#define SECCOMP_ADDFD_FLAG_SEND (1UL << 1)
#endif

/* ---- the table: (op, canonical directory) -> the record's four fixed parts --------------------- */

typedef struct Entry {
    struct Entry *next;
    int op;
    dev_t dev;            /* the directory's inode when the engine judged it */
    ino_t ino;
    char *dir;            /* canonical directory, "/" for the root */
    size_t dir_len;
    char *part[3];        /* record = part0 TARGET part1 PID part2 ,"n":N} "\n" */
    size_t part_len[3];
    int inherit;          /* levels below whose plain names the engine proved the same answer (enter_made) */
} Entry;

#define ID_SLOTS 1024
typedef struct { pid_t pid; uid_t fsuid; gid_t fsgid; } IdSlot;

/* Each task's umask, kept while the task lives (see task_umask). */
#define UMASK_SLOTS 64
#define UNSETTLED_MAX 16
typedef struct { pid_t pid; int pidfd; mode_t umask; } UmaskSlot;
#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif

enum { NR_OPENAT, NR_OPEN, NR_CREAT, NR_UTIMENSAT, NR_MKDIR, NR_MKDIRAT, NR_UNLINK, NR_UNLINKAT, NR_RENAME,
       NR_RENAMEAT, NR_RENAMEAT2, NR_FCHMOD, NR_FCHOWN, NR_CHMOD, NR_FCHMODAT, NR_FCHOWNAT, NR_UMASK, NR_LINK, NR_LINKAT,
       NR_EXECVE, NR_EXECVEAT, NR_RMDIR, NR_SYMLINK, NR_SYMLINKAT, NR_COUNT };
static const char *const NR_NAMES[NR_COUNT] = {"openat", "open", "creat", "utimensat", "mkdir", "mkdirat",
                                               "unlink", "unlinkat", "rename", "renameat", "renameat2",
                                               "fchmod", "fchown", "chmod", "fchmodat", "fchownat", "umask",
                                               "link", "linkat", "execve", "execveat", "rmdir",
                                               "symlink", "symlinkat"};

/* Threads of the core that wait in SECCOMP_IOCTL_NOTIF_RECV at once. Measured on this kind of machine
 * (2 vCPUs whose idle halt is a VM exit): with one thread waiting, every ADDFD round trip wakes an idle
 * CPU twice (about 56 us); with two, one of them is always waiting on the CPU the task runs on, which
 * the kernel's same-CPU wake-up (SYNC_WAKE_UP) then uses (about 15 us). More than two wake each other
 * for nothing on every notification (the RECV wait is not exclusive) and measured slower. */
#define RECEIVERS 2

typedef struct Pending { struct seccomp_notif n; struct Pending *next; } Pending;

typedef struct {
    PyObject_HEAD
    int listener;
    uint32_t arch;
    int nr[NR_COUNT];     /* syscall numbers by NR_* (-1: not on this architecture) */
    int full_audit;
    int enabled;
    /* spool */
    pthread_mutex_t spool_lock;
    int spool_fd;
    uint64_t last, acked, window;
    int spool_errno;      /* the spool broke: every later append fails */
    int stopped;          /* recording stopped: no fast path */
    int wake_fd;          /* eventfd written when a record is appended while none was pending */
    int pending;
    /* table */
    pthread_rwlock_t table_lock;
    Entry **buckets;
    Entry *retired;       /* replaced entries, freed with the core */
    uint64_t table_gen;   /* bumped by every clear: an entry derived from an older one is not added */
    size_t nbuckets, nentries;
    char **globs;
    size_t nglobs;
    /* receiving: the core's own threads wait in RECV (see receiver_main); what they may not answer is
     * queued here for the Python workers, which take it with next() */
    pthread_mutex_t q_lock;
    pthread_cond_t q_cond;
    struct Pending *q_head, *q_tail;
    int hung;                     /* the listener hung up: every task using the filter is gone */
    int recv_errno;               /* an unexpected RECV error, reported once by next() */
    int stopping;
    int nreceivers;               /* started (0: not yet; next() starts them) */
    pthread_t receivers[RECEIVERS];
    pthread_mutex_t recv_guard[RECEIVERS]; /* held by a receiver whenever it is not waiting in RECV */
    int receiver_live[RECEIVERS];
    /* the sandbox's root: every task has the same one (chroot, pivot_root, setns and new mount
     * namespaces are refused by the filter, which is installed after the root is final) */
    pthread_mutex_t root_lock;
    int rootfd;
    int proc_checked;             /* 1: the sandbox's /proc is a proc file system; -1: it is not; 0: not looked */
    char root_text[PATH_LIMIT];
    size_t root_len;
    /* acting as the task: each pid's fsuid/fsgid (see cached_ids) */
    pthread_mutex_t id_lock;
    IdSlot id_slots[ID_SLOTS];
    /* each task's umask (see task_umask) */
    pthread_mutex_t umask_lock;
    UmaskSlot umask_slots[UMASK_SLOTS];
    uint64_t umask_gen;           /* bumped whenever any task's umask may have changed */
    pid_t unsettled[UNSETTLED_MAX]; /* tasks whose umask call was let through and may not have run yet */
    int nunsettled;               /* read without the lock as a hint */
    int umask_never;              /* more unsettled calls at once than the list holds: keep nothing more */
    int privileged;
    uid_t own_uid;
    gid_t own_gid;
    /* counters */
    uint64_t fast_writes, fast_reads, handed_back, kept_dirs;
} Core;

static uint64_t hash_key(int op, dev_t dev, ino_t ino) {
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)op;
    h = (h ^ (uint64_t)dev) * 1099511628211ULL;
    h = (h ^ (uint64_t)ino) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static void entry_free(Entry *e) {
    free(e->dir);
    for (int i = 0; i < 3; i++) free(e->part[i]);
    free(e);
}

static void table_clear(Core *c) {
    c->table_gen++;
    for (size_t i = 0; i < c->nbuckets; i++) {
        Entry *e = c->buckets[i];
        while (e) { Entry *n = e->next; entry_free(e); e = n; }
        c->buckets[i] = NULL;
    }
    c->nentries = 0;
}

static Entry *table_find(Core *c, int op, dev_t dev, ino_t ino) {
    Entry *e = c->buckets[hash_key(op, dev, ino) % c->nbuckets];
    for (; e; e = e->next)
        if (e->op == op && e->dev == dev && e->ino == ino) return e;
    return NULL;
}

/* ---- the policy's glob segments, matched as guard.policy.paths matches one segment ------------- */

/* One segment glob: `*` any run, `?` one byte, `[...]` a class (`!`/`^` negates, a leading `]` is
 * literal, `a-z` ranges), `\x` the literal x. Names reaching here are printable ASCII (see plain_name),
 * and the patterns were made ASCII by guard.sandbox.fastpath (a conservative superset). */
static int class_match(const char *p, const char **end, unsigned char ch) {
    const char *q = p + 1;
    int negate = 0, hit = 0;
    if (*q == '!' || *q == '^') { negate = 1; q++; }
    const char *body = q;
    if (*q == ']') q++;
    while (*q && *q != ']') q++;
    if (!*q) { *end = NULL; return 0; }
    *end = q;
    for (const char *r = body; r < q; r++) {
        if (r + 2 < q && r[1] == '-') {
            if ((unsigned char)r[0] <= ch && ch <= (unsigned char)r[2]) hit = 1;
            r += 2;
        } else if ((unsigned char)*r == ch) {
            hit = 1;
        }
    }
    return negate ? !hit : hit;
}

static int glob_match(const char *p, const char *s) {
    const char *star_p = NULL, *star_s = NULL;
    while (*s) {
        if (*p == '*') { star_p = ++p; star_s = s; continue; }
        if (*p == '?') { p++; s++; continue; }
        if (*p == '[') {
            const char *end;
            int ok = class_match(p, &end, (unsigned char)*s);
            if (end == NULL) return 1; /* malformed: treat as matching (conservative) */
            if (ok) { p = end + 1; s++; continue; }
        } else if (*p == '\\' && p[1]) {
            if (p[1] == *s) { p += 2; s++; continue; }
        } else if (*p && *p == *s) {
            p++; s++; continue;
        }
        if (star_p) { p = star_p; s = ++star_s; continue; }
        return 0;
    }
    while (*p == '*') p++;
    return *p == '\0';
}

static int name_spoken_of(Core *c, const char *name) {
    for (size_t i = 0; i < c->nglobs; i++)
        if (glob_match(c->globs[i], name)) return 1;
    return 0;
}

/* ---- the spool ------------------------------------------------------------------------------------ */

/* Append `head` (a JSON object without its closing brace) + ,"n":N} + newline with one write(2).
 * Caller holds spool_lock. -> n, or 0 with errno set. */
static uint64_t spool_write_locked(Core *c, const char *head, size_t head_len) {
    if (c->spool_errno) { errno = c->spool_errno; return 0; }
    if (c->spool_fd < 0) { errno = EBADF; return 0; }
    uint64_t n = c->last + 1;
    char tail[48];
    int tl = snprintf(tail, sizeof tail, "%s\"n\":%llu}\n", head_len > 1 ? "," : "", (unsigned long long)n);
    struct iovec iov[2] = {{(void *)head, head_len}, {tail, (size_t)tl}};
    ssize_t want = (ssize_t)head_len + tl;
    ssize_t got = writev(c->spool_fd, iov, 2);
    if (got != want) {
        c->spool_errno = got < 0 ? errno : ENOSPC;
        errno = c->spool_errno;
        return 0;
    }
    c->last = n;
    if (!c->pending && c->wake_fd >= 0) {
        uint64_t one = 1;
        c->pending = 1;
        if (write(c->wake_fd, &one, sizeof one) < 0) { /* the recorder polls too; nothing lost */ }
    }
    return n;
}

/* ---- the task ------------------------------------------------------------------------------------- */

static int id_valid(Core *c, uint64_t id) {
    return ioctl(c->listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

static int send_reply(Core *c, uint64_t id, int error, int cont) {
    struct seccomp_notif_resp r;
    memset(&r, 0, sizeof r);
    r.id = id;
    r.error = error ? -error : 0;
    r.flags = cont ? SECCOMP_USER_NOTIF_FLAG_CONTINUE : 0;
    if (ioctl(c->listener, SECCOMP_IOCTL_NOTIF_SEND, &r) < 0 && errno != ENOENT) return -1;
    return 0;
}

/* The NUL-terminated string at addr in the task, into buf (PATH_LIMIT). -> length, or -1. */
static ssize_t read_task_str(pid_t pid, uint64_t addr, char *buf) {
    size_t have = 0;
    if (addr == 0) return -1;
    while (have < PATH_LIMIT) {
        size_t want = 4096 - ((addr + have) % 4096);
        if (want > PATH_LIMIT - have) want = PATH_LIMIT - have;
        struct iovec local = {buf + have, want};
        struct iovec remote = {(void *)(uintptr_t)(addr + have), want};
        ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
        if (got <= 0) return -1;
        char *nul = memchr(buf + have, 0, (size_t)got);
        if (nul) return nul - buf;
        have += (size_t)got;
    }
    return -1;
}

/* Printable ASCII that JSON writes as itself, so the record holds the bytes exactly as Python would. */
static int plain_bytes(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch > 0x7e || ch == '"' || ch == '\\') return 0;
    }
    return 1;
}

/* Split `path` into its directory (normalized: no "", no ".") and final name; refuse a final name of
 * ".", ".." or "" (a trailing slash). ".." in the directory is refused too, unless `dotdot` is given: it
 * is then kept in the directory (openat2 resolves it as the kernel does) and *dotdot says there was one.
 * -> 1 ok. */
static int split_path(const char *path, char *dir, size_t *dir_len, const char **name, int *dotdot) {
    size_t dl = 0;
    const char *p = path, *last = NULL;
    if (dotdot) *dotdot = 0;
    while (*p) {
        while (*p == '/') p++;
        if (!*p) return 0; /* trailing slash */
        const char *start = p;
        while (*p && *p != '/') p++;
        size_t len = (size_t)(p - start);
        if (len == 2 && start[0] == '.' && start[1] == '.') {
            if (!*p || !dotdot) return 0;
            *dotdot = 1;
        }
        if (!*p) { last = start; break; }
        if (len == 1 && start[0] == '.') continue;
        if (dl) dir[dl++] = '/';
        memcpy(dir + dl, start, len);
        dl += len;
    }
    if (!last || (last[0] == '.' && last[1] == '\0')) return 0;
    dir[dl] = '\0';
    *dir_len = dl;
    *name = last;
    return 1;
}

/* `base` (an absolute path, no "." or ".." in it) joined with `rel` (components separated by "/"), ".."
 * taking the last component off and stopping at the root, as posixpath.normpath does: the name a path
 * with ".." stands for lexically. -> its length in `out`, or -1 when it does not fit. */
static ssize_t lexical_join(const char *base, size_t blen, const char *rel, char *out) {
    size_t n = blen;
    if (n >= PATH_LIMIT) return -1;
    memcpy(out, base, n);
    while (n > 1 && out[n - 1] == '/') n--;
    const char *p = rel;
    while (*p) {
        while (*p == '/') p++;
        if (!*p) break;
        const char *start = p;
        while (*p && *p != '/') p++;
        size_t len = (size_t)(p - start);
        if (len == 1 && start[0] == '.') continue;
        if (len == 2 && start[0] == '.' && start[1] == '.') {
            while (n > 1 && out[n - 1] != '/') n--;
            if (n > 1) n--; /* the slash before it, unless that is the root */
            continue;
        }
        if (n + 1 + len >= PATH_LIMIT) return -1;
        if (n > 1) out[n++] = '/';
        memcpy(out + n, start, len);
        n += len;
    }
    out[n] = '\0';
    return (ssize_t)n;
}

static int openat2_dir(int base, const char *path, uint64_t resolve) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = resolve | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    return (int)syscall(SYS_openat2, base, path[0] ? path : ".", &how, sizeof how);
}

/* The sandbox's root, opened once (see Core.rootfd) from the first task that asks. */
static int id_valid(Core *c, uint64_t id);

static int sandbox_root(Core *c, const struct seccomp_notif *n) {
    pthread_mutex_lock(&c->root_lock);
    if (c->rootfd < 0) {
        char link[64];
        snprintf(link, sizeof link, "/proc/%u/root", n->pid);
        ssize_t rl = readlink(link, c->root_text, sizeof c->root_text - 1);
        int fd = rl > 0 ? open(link, O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
        if (fd >= 0 && !id_valid(c, n->id)) { close(fd); fd = -1; } /* the pid was someone else's by now */
        if (fd >= 0) {
            c->root_text[rl] = '\0';
            c->root_len = (rl == 1 && c->root_text[0] == '/') ? 0 : (size_t)rl;
            c->rootfd = fd;
        }
    }
    int fd = c->rootfd;
    pthread_mutex_unlock(&c->root_lock);
    return fd;
}

/* The path of directory `fd` in the task's view, as the kernel names its dentry now (readlink of our
 * own descriptor, the sandbox root's prefix taken off). -> length, or -1 when it has none we can use. */
static ssize_t strip_root(Core *c, char *out, ssize_t n);

static ssize_t dir_path(Core *c, int fd, char *out) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, PATH_LIMIT - 1);
    if (n <= 0 || out[0] != '/') return -1;
    out[n] = '\0';
    return strip_root(c, out, n);
}

/* `out` (n bytes, NUL-terminated, as we name it) in the task's view: the sandbox root's prefix taken off.
 * -> the new length, or -1 when it is not below that root. */
static ssize_t strip_root(Core *c, char *out, ssize_t n) {
    if (c->root_len) {
        size_t rl = c->root_len;
        if ((size_t)n < rl || strncmp(out, c->root_text, rl) != 0 || (out[rl] != '/' && out[rl] != '\0')) return -1;
        memmove(out, out + rl, (size_t)n - rl + 1);
        n -= (ssize_t)rl;
        if (n == 0) { out[0] = '/'; out[1] = '\0'; n = 1; }
    }
    return n;
}

typedef struct { uid_t fsuid; gid_t fsgid; mode_t umask; int ok; } TaskIds;

static TaskIds task_ids(pid_t pid) {
    TaskIds t = {0, 0, 022, 0};
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return t;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return t;
    buf[n] = '\0';
    int have = 0;
    char *p;
    if ((p = strstr(buf, "\nUmask:\t")) != NULL) { t.umask = (mode_t)strtoul(p + 8, NULL, 8); have |= 1; }
    unsigned long a, b, cc, d;
    if ((p = strstr(buf, "\nUid:\t")) != NULL && sscanf(p + 6, "%lu %lu %lu %lu", &a, &b, &cc, &d) == 4) {
        t.fsuid = (uid_t)d; have |= 2;
    }
    if ((p = strstr(buf, "\nGid:\t")) != NULL && sscanf(p + 6, "%lu %lu %lu %lu", &a, &b, &cc, &d) == 4) {
        t.fsgid = (gid_t)d; have |= 4;
    }
    t.ok = have == 7;
    return t;
}

enum { HANDED_BACK = 0, ANSWERED = 1 };

/* ---- each task's umask ----------------------------------------------------------------------------
 * A create must apply the task's umask, and reading /proc/<pid>/status for it was the largest single cost
 * of a create. The umask changes only through umask(2) (inherited on fork, shared by threads that share
 * their fs_struct), and the filter sends every umask(2) call here. So a task's umask, once read, is kept
 * with a pidfd of the task: it stays true while that task lives (a reused pid is another task, and its
 * pidfd is then readable) and until any task calls umask(2), which forgets every kept umask. The call is
 * let through (the kernel sets it); until it has run (see umask_called), nothing read is kept. */

static void umask_forget_locked(Core *c) {
    c->umask_gen++;
    for (int i = 0; i < UMASK_SLOTS; i++) {
        if (c->umask_slots[i].pid && c->umask_slots[i].pidfd >= 0) close(c->umask_slots[i].pidfd);
        c->umask_slots[i] = (UmaskSlot){0, -1, 0};
    }
}

/* A umask read from the task itself; -> 0, or -1 when it cannot be read (the task is gone). */
static int read_umask(pid_t pid, mode_t *out) {
    TaskIds t = task_ids(pid);
    if (!t.ok) return -1;
    *out = t.umask;
    return 0;
}

static void umask_settled(Core *c, pid_t pid);

/* umask(2) from a task: forget every kept umask, let the call through, and wait (briefly) until the kernel
 * has set it, so that what is read afterwards may be kept again. A task that has not run its call within
 * the bound stays unsettled until its next notification (its call has run by then). */
static int fast_umask(Core *c, const struct seccomp_notif *n) {
    if (c->nr[NR_UMASK] < 0 || (int)n->data.nr != c->nr[NR_UMASK]) return HANDED_BACK;
    pid_t pid = (pid_t)n->pid;
    pthread_mutex_lock(&c->umask_lock);
    if (c->nunsettled < UNSETTLED_MAX) c->unsettled[c->nunsettled++] = pid;
    else c->umask_never = 1; /* too many at once: keep nothing for the rest of the session */
    umask_forget_locked(c);
    pthread_mutex_unlock(&c->umask_lock);
    send_reply(c, n->id, 0, 1);
    mode_t want = (mode_t)(n->data.args[0] & 0777), now;
    for (int i = 0; i < 2000; i++) {
        if (read_umask(pid, &now) != 0 || now == want) { umask_settled(c, pid); break; }
        sched_yield();
    }
    return ANSWERED;
}

/* Any notification from `pid` means its earlier umask call (if any) has run. */
static void umask_settled(Core *c, pid_t pid) {
    pthread_mutex_lock(&c->umask_lock);
    for (int i = 0; i < c->nunsettled; i++) {
        if (c->unsettled[i] != pid) continue;
        c->unsettled[i] = c->unsettled[--c->nunsettled];
        umask_forget_locked(c); /* nothing was kept meanwhile; this only bumps the generation */
        break;
    }
    pthread_mutex_unlock(&c->umask_lock);
}

/* The umask of the (live, notifying) task `pid`, kept or read. -> 0, or -1. The caller has checked the
 * notification is still valid, so the task at `pid` is the one that asked. */
static int task_umask(Core *c, const struct seccomp_notif *n, mode_t *out) {
    pid_t pid = (pid_t)n->pid;
    UmaskSlot *slot = &c->umask_slots[(unsigned)pid % UMASK_SLOTS];
    pthread_mutex_lock(&c->umask_lock);
    if (slot->pid == pid && c->nunsettled == 0 && !c->umask_never) {
        struct pollfd p = {slot->pidfd, POLLIN, 0};
        if (poll(&p, 1, 0) == 0) { /* the task we read it from still lives: this is that task */
            *out = slot->umask;
            pthread_mutex_unlock(&c->umask_lock);
            return 0;
        }
    }
    uint64_t gen = c->umask_gen;
    pthread_mutex_unlock(&c->umask_lock);
    /* the pidfd first, then the value, then the notification re-checked: all three are of one task */
    int pidfd = (int)syscall(SYS_pidfd_open, pid, PIDFD_THREAD);
    if (read_umask(pid, out) != 0 || !id_valid(c, n->id)) {
        if (pidfd >= 0) close(pidfd);
        return -1;
    }
    if (pidfd < 0) return 0;
    pthread_mutex_lock(&c->umask_lock);
    if (gen == c->umask_gen && c->nunsettled == 0 && !c->umask_never) {
        if (slot->pid && slot->pidfd >= 0) close(slot->pidfd);
        *slot = (UmaskSlot){pid, pidfd, *out};
        pidfd = -1;
    }
    pthread_mutex_unlock(&c->umask_lock);
    if (pidfd >= 0) close(pidfd);
    return 0;
}

/* Each task's fsuid/fsgid, read once per pid as the Python supervisor does: nothing in the sandbox can
 * change its ids (no capabilities, no_new_privs), so a pid reused inside it has the same ones. The umask
 * comes from task_umask. */
static TaskIds cached_ids(Core *c, const struct seccomp_notif *n, int need_umask) {
    pid_t pid = (pid_t)n->pid;
    IdSlot *slot = &c->id_slots[(unsigned)pid % ID_SLOTS];
    pthread_mutex_lock(&c->id_lock);
    IdSlot copy = *slot;
    pthread_mutex_unlock(&c->id_lock);
    TaskIds t;
    if (copy.pid == pid && pid != 0) {
        t = (TaskIds){copy.fsuid, copy.fsgid, 022, 1};
    } else {
        t = task_ids(pid);
        if (!t.ok) return t;
        pthread_mutex_lock(&c->id_lock);
        *slot = (IdSlot){pid, t.fsuid, t.fsgid};
        pthread_mutex_unlock(&c->id_lock);
        if (need_umask) return t; /* the status just read holds the umask too */
    }
    if (need_umask && task_umask(c, n, &t.umask) != 0) t.ok = 0;
    return t;
}

/* Per-thread credentials (raw syscalls: glibc would broadcast setfsuid/capset to every thread). */
typedef struct { int changed_ids, changed_caps; uid_t old_uid; gid_t old_gid;
                 struct __user_cap_data_struct caps[2]; } Creds;

/* This thread's own capability sets, read once (only as_self ever changes them, and puts them back). */
static __thread int caps_read;
static __thread struct __user_cap_data_struct thread_caps[2];
/* A receiver of a privileged core drops its effective capabilities once, when it starts (see lean_thread):
 * it then acts as a task without the two capset calls per act. */
static __thread int thread_lean;

/* Make this thread lean for good: no effective capability, as every task in the sandbox. Whatever it then
 * cannot do (a task that is not dumpable, say) fails, and the notification goes to Python, which still
 * has them: fewer rights, never more. */
static void lean_thread(Core *c) {
    if (!c->privileged) return;
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    if (syscall(SYS_capget, &h, thread_caps) != 0) return;
    caps_read = 1;
    struct __user_cap_data_struct lean[2];
    memcpy(lean, thread_caps, sizeof lean);
    lean[0].effective = lean[1].effective = 0;
    if (syscall(SYS_capset, &h, lean) == 0) thread_lean = 1;
}

/* A receiver's own umask: it unshares its fs_struct (cwd, root, umask) when it starts, so it can create
 * with the task's umask in effect and let the kernel apply it, or the directory's default ACL instead, as it
 * does for the task; otherwise it creates with the mode already masked and sets the exact mode after. */
static __thread int thread_own_fs;
static __thread mode_t thread_umask;

static void own_fs_thread(void) {
    if (unshare(CLONE_FS) != 0) return;
    thread_umask = umask(022);
    umask(thread_umask);
    thread_own_fs = 1;
}

/* -> 1 when this thread's umask is now `want` (the kernel applies it to what this thread creates). */
static int with_umask(mode_t want) {
    if (!thread_own_fs) return 0;
    if (thread_umask != want) {
        umask(want);
        thread_umask = want;
    }
    return 1;
}

static int as_task(Core *c, const TaskIds *t, Creds *saved) {
    memset(saved, 0, sizeof *saved);
    if (t->fsuid != c->own_uid || t->fsgid != c->own_gid) {
        saved->old_gid = (gid_t)syscall(SYS_setfsgid, t->fsgid);
        saved->old_uid = (uid_t)syscall(SYS_setfsuid, t->fsuid);
        saved->changed_ids = 1;
    }
    if (c->privileged && !thread_lean) {
        struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
        if (!caps_read) {
            if (syscall(SYS_capget, &h, thread_caps) != 0) return -1;
            caps_read = 1;
        }
        memcpy(saved->caps, thread_caps, sizeof saved->caps);
        struct __user_cap_data_struct lean[2];
        memcpy(lean, thread_caps, sizeof lean);
        lean[0].effective = lean[1].effective = 0;
        if (syscall(SYS_capset, &h, lean) != 0) return -1;
        saved->changed_caps = 1;
    }
    return 0;
}

static void as_self(Creds *saved) {
    if (saved->changed_caps) {
        struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
        /* if this fails the thread stays lean: fewer rights, never more (later acts fail closed) */
        if (syscall(SYS_capset, &h, saved->caps) != 0) { /* nothing more to do */ }
    }
    if (saved->changed_ids) {
        syscall(SYS_setfsuid, saved->old_uid);
        syscall(SYS_setfsgid, saved->old_gid);
    }
}

/* Take on the task's credentials for one act: its ids (read when we act for another user or need its umask),
 * then as_task. -> 0, after which the caller acts and calls as_self(saved); or the errno to answer. */
static int enter_task(Core *c, const struct seccomp_notif *n, int need_umask, TaskIds *ids, Creds *saved) {
    *ids = (TaskIds){c->own_uid, c->own_gid, 022, 1};
    if (need_umask || c->privileged) *ids = cached_ids(c, n, need_umask);
    if (!ids->ok) return EACCES;
    if (as_task(c, ids, saved) != 0) { as_self(saved); return EPERM; }
    return 0;
}

/* ---- the fast path -------------------------------------------------------------------------------- */

static int record_locked(Core *c, const Entry *e, const char *target, size_t tlen, pid_t pid) {
    char line[PATH_LIMIT * 2 + 4096];
    size_t need = e->part_len[0] + tlen + e->part_len[1] + 16 + e->part_len[2];
    if (need > sizeof line) return -1;
    size_t at = 0;
    memcpy(line + at, e->part[0], e->part_len[0]); at += e->part_len[0];
    memcpy(line + at, target, tlen); at += tlen;
    memcpy(line + at, e->part[1], e->part_len[1]); at += e->part_len[1];
    at += (size_t)snprintf(line + at, 16, "%d", (int)pid);
    memcpy(line + at, e->part[2], e->part_len[2]); at += e->part_len[2];
    return spool_write_locked(c, line, at) ? 0 : -1;
}

/* What locate() found: the held directory, the final name, what is there, and the table entry. */
typedef struct {
    int basefd, dfd;
    int slot;             /* dfd belongs to this receiver's directory cache (see dir_cache), or -1: ours */
    const char *name;
    struct stat st;
    int exists;
    Entry entry;          /* a copy: its parts live as long as the core */
    uint64_t gen;         /* the table's generation when the entry was copied */
    size_t tlen;          /* canon holds the target, dir + "/" + name */
    char path[PATH_LIMIT], dir[PATH_LIMIT], canon[PATH_LIMIT * 2];
} Found;

/* ---- each receiver's last directories --------------------------------------------------------------
 * Resolving a task's directory anew (open its cwd through /proc, openat2, fstat, two closes) was a third
 * of the syscalls of a notification. A receiver keeps the last few directories it resolved, by their
 * path in the task's view, as O_PATH descriptors. One is used only when the kernel names it by exactly
 * the path the task's call names now (readlink of the descriptor, the one the entry check reads anyway):
 * a directory renamed, removed or replaced since has another name (or " (deleted)") and is resolved the
 * general way. The path itself comes from the task's cwd as the kernel names it now (readlink of
 * /proc/<pid>/cwd, read before the notification is re-validated) and the call's path, which must be
 * plain. So the directory acted in is the one whose name was judged, as with a fresh openat2; the table
 * lookup by inode and every later check are unchanged. A descriptor in use by a call is never evicted.
 * Why up to 64: work spreads its writes over many directories at once (git's 256 object directories, a
 * tar or a package manager filling a tree, a build's output directories); with 8 kept, a round of writes
 * over 30 directories missed on every write. Each receiver allocates its own table (no other thread pays
 * for it) and keeps nothing when it cannot. The descriptors it holds count against guard run's limit of
 * open files (the user's, often 1024, sometimes 256), which the proxy's connections and the rest of the
 * supervisor need too: a receiver keeps at most 1/32 of the soft limit (64 from 2048 up, 8 at 256). */
#define DIR_CACHE_MAX 64
#define DIR_CACHE_MIN 4
typedef struct { char path[PATH_LIMIT]; size_t len; int fd; int pins; struct stat st; } CachedDir;
static __thread CachedDir *dir_cache;
static __thread int dir_cache_size;
static __thread int dir_cache_next;
/* Set by receiver_main, which sets up the cache and frees it: only a receiver keeps directories. */
static __thread int is_receiver;

static int dir_cache_capacity(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return DIR_CACHE_MIN;
    rlim_t share = rl.rlim_cur == RLIM_INFINITY ? DIR_CACHE_MAX : rl.rlim_cur / 32;
    return share >= DIR_CACHE_MAX ? DIR_CACHE_MAX : share <= DIR_CACHE_MIN ? DIR_CACHE_MIN : (int)share;
}

static void dir_cache_init(void) {
    dir_cache_size = dir_cache_capacity();
    dir_cache = malloc(sizeof(CachedDir) * (size_t)dir_cache_size);
    if (!dir_cache) return;
    for (int i = 0; i < dir_cache_size; i++) { dir_cache[i].fd = -1; dir_cache[i].len = 0; dir_cache[i].pins = 0; }
}

static void dir_cache_free(void) {
    if (!dir_cache) return;
    for (int i = 0; i < dir_cache_size; i++) if (dir_cache[i].fd >= 0) { close(dir_cache[i].fd); dir_cache[i].fd = -1; }
    free(dir_cache);
    dir_cache = NULL;
}

static int dir_cache_find(const char *path, size_t len) {
    if (!dir_cache) return -1;
    for (int i = 0; i < dir_cache_size; i++)
        if (dir_cache[i].fd >= 0 && dir_cache[i].len == len && memcmp(dir_cache[i].path, path, len) == 0) return i;
    return -1;
}

static void dir_cache_drop(int i) {
    if (dir_cache[i].pins) return; /* in use by this call: it fails the check again next time */
    close(dir_cache[i].fd);
    dir_cache[i].fd = -1;
    dir_cache[i].len = 0;
}

/* Keep `fd` (a directory this call resolved and checked, named `path`): -> its slot, or -1 when every slot
 * is in use by this call (the caller then keeps and closes it). */
static int dir_cache_put(const char *path, size_t len, int fd, const struct stat *st) {
    if (len >= PATH_LIMIT || !dir_cache) return -1;
    for (int tries = 0; tries < dir_cache_size; tries++) {
        int i = dir_cache_next;
        dir_cache_next = (dir_cache_next + 1) % dir_cache_size;
        if (dir_cache[i].pins) continue;
        if (dir_cache[i].fd >= 0) close(dir_cache[i].fd);
        memcpy(dir_cache[i].path, path, len);
        dir_cache[i].len = len;
        dir_cache[i].fd = fd;
        dir_cache[i].st = *st;
        dir_cache[i].pins = 1;
        return i;
    }
    return -1;
}

static void found_init(Found *f) {
    f->basefd = f->dfd = -1;
    f->slot = -1;
}

static void found_close(Found *f) {
    if (f->slot >= 0) dir_cache[f->slot].pins--;
    else if (f->dfd >= 0) close(f->dfd);
    if (f->basefd >= 0) close(f->basefd);
    f->slot = -1;
    f->dfd = f->basefd = -1;
}

/* Enter directory `st` (at path `dir`) with the entry `parent` of a directory `levels` above it, whose
 * answer the engine proved for plain names that many levels (and more) down (guard.sandbox.fastpath.
 * FastPath._entry): the same parts, `levels` less to inherit. Not if the table was cleared since `gen`
 * (a `.git` changed: fastpath.forget), nor over an entry already there. */
static void enter_below(Core *c, const Entry *parent, uint64_t gen, int levels, const char *dir, size_t dir_len,
                        const struct stat *st) {
    if (parent->inherit < levels || !S_ISDIR(st->st_mode)) return;
    Entry *e = calloc(1, sizeof *e);
    if (!e) return;
    e->op = parent->op;
    e->dev = st->st_dev;
    e->ino = st->st_ino;
    e->dir = strndup(dir, dir_len);
    e->dir_len = dir_len;
    e->inherit = parent->inherit - levels;
    int ok = e->dir != NULL;
    for (int i = 0; i < 3; i++) {
        e->part[i] = malloc(parent->part_len[i] + 1);
        if (!e->part[i]) { ok = 0; continue; }
        memcpy(e->part[i], parent->part[i], parent->part_len[i]);
        e->part_len[i] = parent->part_len[i];
    }
    if (ok) {
        pthread_rwlock_wrlock(&c->table_lock);
        if (c->table_gen == gen && c->nentries < 1000000 && !table_find(c, e->op, e->dev, e->ino)) {
            size_t b = hash_key(e->op, e->dev, e->ino) % c->nbuckets;
            e->next = c->buckets[b];
            c->buckets[b] = e;
            c->nentries++;
            e = NULL;
        }
        pthread_rwlock_unlock(&c->table_lock);
    }
    if (e) entry_free(e);
}

/* A directory not in the table, `held` at (canonical, plain) path `dir`: enter it if an entered directory
 * at most INHERIT_MAX levels above it proved its answer that deep, every directory on the way (itself
 * included) has a plain name no rule speaks of, and none holds a `.git` (which repository a path lies in
 * must be the one the entry was judged in). Existing trees are entered on their first write, with no
 * Python. -> 1 when it was entered. */
#define INHERIT_MAX 4
static int enter_from_above(Core *c, int op, int held, const char *dir, size_t dir_len, const struct stat *st) {
    int cur = held, entered = 0;
    size_t len = dir_len;
    for (int levels = 1; levels <= INHERIT_MAX && len > 1; levels++) {
        const char *slash = memrchr(dir, '/', len);
        if (!slash) break;
        size_t plen = (size_t)(slash - dir);
        char name[256];
        size_t nlen = len - plen - 1;
        if (nlen == 0 || nlen >= sizeof name) break;
        memcpy(name, slash + 1, nlen);
        name[nlen] = '\0';
        struct stat gst;
        if (fstatat(cur, ".git", &gst, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT) break;
        int up = openat(cur, "..", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (cur != held) close(cur);
        cur = up;
        struct stat pst;
        if (cur < 0 || fstat(cur, &pst) != 0) break;
        pthread_rwlock_rdlock(&c->table_lock);
        int spoken = name_spoken_of(c, name);
        const Entry *pe = spoken ? NULL : table_find(c, op, pst.st_dev, pst.st_ino);
        Entry parent;
        uint64_t gen = c->table_gen;
        int match = pe && (plen == 0 ? pe->dir_len == 1 && pe->dir[0] == '/'
                                     : pe->dir_len == plen && memcmp(pe->dir, dir, plen) == 0);
        if (match) parent = *pe;
        pthread_rwlock_unlock(&c->table_lock);
        if (spoken) break;
        if (match) {
            if (parent.inherit >= levels) {
                enter_below(c, &parent, gen, levels, dir, dir_len, st);
                entered = 1;
            }
            break;
        }
        len = plen;
    }
    if (cur >= 0 && cur != held) close(cur);
    return entered;
}

/* An O_PATH descriptor of the name locate() judged, only while it is still that inode (a name swapped
 * since is answered EAGAIN: the task retries and is judged again). -> fd, or -1 with *err set. */
static int hold_judged(const Found *f, int *err) {
    struct stat st;
    int obj = openat(f->dfd, f->name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (obj < 0) { *err = errno; return -1; }
    if (fstat(obj, &st) != 0) *err = errno;
    else if (st.st_dev != f->st.st_dev || st.st_ino != f->st.st_ino) *err = EAGAIN;
    else return obj;
    close(obj);
    return -1;
}

/* What may be at the final name for the core to take the call (anything else goes to Python, which
 * answers what the kernel would: EEXIST, EISDIR, ENOENT...). */
enum {
    MAY_ABSENT = 1,       /* nothing there (a create) */
    MAY_REG1 = 2,         /* a regular file with one name (writes: another name was never judged) */
    MAY_REG = 4,          /* a regular file, any link count (names: unlink, rename) */
    MAY_DIR = 8,          /* a directory (full-audit reads) */
    MAY_ENOENT = 16,      /* nothing there: answer ENOENT before any decision, as Python does (unlink) */
};

enum { RECORDED = 2, LOCATED = 3 };

/* The directory's path in the task's view, the key of a receiver's kept directories: "/" + dir for an
 * absolute path, the task's cwd (as the kernel names it now) + "/" + dir for one relative to it. -> its
 * length in `key`, or -1 (relative to another descriptor, a removed cwd, too long: no key). */
static ssize_t cache_key(Core *c, const struct seccomp_notif *n, int dirfd, const Found *f, size_t dlen,
                         char *key) {
    size_t at;
    if (f->path[0] == '/') {
        key[0] = '/';
        at = 1;
    } else if (dirfd == AT_FDCWD) {
        static const char gone[] = " (deleted)";
        size_t gl = sizeof gone - 1;
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/%u/cwd", n->pid);
        ssize_t cl = readlink(proc, key, PATH_LIMIT - 1);
        if (cl <= 0 || key[0] != '/') return -1;
        key[cl] = '\0';
        if ((size_t)cl >= gl && memcmp(key + cl - gl, gone, gl) == 0) return -1;
        cl = strip_root(c, key, cl);
        if (cl <= 0) return -1;
        at = (size_t)cl;
        if (at > 1 && dlen) key[at++] = '/'; /* at 1: the root, "/" + dir */
    } else {
        return -1;
    }
    if (at + dlen >= PATH_LIMIT) return -1;
    memcpy(key + at, f->dir, dlen);
    key[at + dlen] = '\0';
    return (ssize_t)(at + dlen);
}

/* Read the path, resolve its directory without symlinks, find the directory (by inode) in the table and
 * check that it is still where the engine judged it (the kernel's own name for it now), check the final
 * name and what is there. Nothing is recorded. -> LOCATED, ANSWERED (the task is gone, or EEXIST/ENOENT comes
 * before any decision) or HANDED_BACK. */
static int locate(Core *c, const struct seccomp_notif *n, int op, int dirfd, uint64_t addr, int may, int excl,
                  Found *f) {
    found_init(f);
    ssize_t plen = read_task_str((pid_t)n->pid, addr, f->path);
    if (plen <= 0 || !plain_bytes(f->path, (size_t)plen)) return HANDED_BACK;
    size_t dlen;
    int dotdot;
    if (!split_path(f->path, f->dir, &dlen, &f->name, &dotdot)) return HANDED_BACK;
    /* the notification is re-validated below, after everything read through the pid (memory, cwd) */

    int rootfd = sandbox_root(c, n);
    if (rootfd < 0) return HANDED_BACK;
    char key[PATH_LIMIT];
    /* a path with ".." is resolved afresh every time: a kept directory is named by where it is, and
     * "a/../b" is there only when "a" is a directory of its own (not a symlink), which the walk checks */
    ssize_t klen = is_receiver && !dotdot ? cache_key(c, n, dirfd, f, dlen, key) : -1;
    int cached = klen > 0 ? dir_cache_find(key, (size_t)klen) : -1;
    ssize_t checked = -1; /* canon holds the kernel's name for dfd, read once for this call */
    struct stat dst;
    if (cached >= 0) {
        ssize_t cl = dir_path(c, dir_cache[cached].fd, f->canon);
        if (cl == klen && memcmp(f->canon, key, (size_t)klen) == 0) {
            f->dfd = dir_cache[cached].fd;
            f->slot = cached;
            __atomic_add_fetch(&c->kept_dirs, 1, __ATOMIC_RELAXED);
            dir_cache[cached].pins++;
            dst = dir_cache[cached].st;
            checked = cl;
        } else {
            dir_cache_drop(cached);
        }
    }
    if (f->dfd >= 0) {
        /* resolved from the cache */
    } else if (f->path[0] == '/') {
        f->dfd = openat2_dir(rootfd, f->dir, RESOLVE_IN_ROOT);
    } else {
        char proc[64];
        if (dirfd == AT_FDCWD) snprintf(proc, sizeof proc, "/proc/%u/cwd", n->pid);
        else if (dirfd >= 0) snprintf(proc, sizeof proc, "/proc/%u/fd/%d", n->pid, dirfd);
        else return HANDED_BACK;
        f->basefd = open(proc, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (f->basefd < 0) return HANDED_BACK;
        if (f->dir[0]) {
            /* ".." may leave the base, as it does for the kernel (it stops at the root): checked below */
            f->dfd = openat2_dir(f->basefd, f->dir, dotdot ? 0 : RESOLVE_BENEATH);
        } else { /* a bare name: the directory is the one we hold (nothing to walk) */
            f->dfd = f->basefd;
            f->basefd = -1;
        }
    }
    if (f->dfd < 0 && errno == ENOENT && !dotdot) {
        /* a directory on the way is missing (no symlink met before it: that would be ELOOP): the kernel's
         * own lookup answers ENOENT whatever the policy, and Python answers it before any decision */
        if (id_valid(c, n->id)) send_reply(c, n->id, ENOENT, 0);
        return ANSWERED;
    }
    if (f->dfd < 0 || (checked < 0 && fstat(f->dfd, &dst) != 0)) return HANDED_BACK;
    if (dotdot) {
        /* The directory reached must be the one the path names lexically (the base's name in the task's
         * view joined with the path, ".." taken off as posixpath.normpath does): that is the other name
         * Python judges a write on, and with no symlink on the way (the walk refused them) it is the
         * directory's own. Where the two differ (a root that is not the namespace's), Python decides. */
        char base[PATH_LIMIT], lex[PATH_LIMIT];
        ssize_t bl = 1;
        if (f->path[0] == '/') { base[0] = '/'; base[1] = '\0'; }
        else bl = dir_path(c, f->basefd, base);
        ssize_t ll = bl > 0 && base[0] == '/' ? lexical_join(base, (size_t)bl, f->dir, lex) : -1;
        ssize_t cl = ll > 0 ? dir_path(c, f->dfd, f->canon) : -1;
        if (ll <= 0 || cl != ll || memcmp(f->canon, lex, (size_t)ll) != 0) return HANDED_BACK;
        checked = cl;
    }
    if (excl) {
        /* A name to create that is there (mkdir -p, npm creating every directory it extracts into,
         * O_CREAT|O_EXCL): the kernel answers EEXIST before any permission is looked at, and Python
         * answers it before any decision, wherever the directory is: so does the core, entered
         * directory or not, nothing recorded. */
        struct stat there;
        if (fstatat(f->dfd, f->name, &there, AT_SYMLINK_NOFOLLOW) == 0) {
            if (id_valid(c, n->id)) send_reply(c, n->id, EEXIST, 0);
            return ANSWERED;
        }
    }

    for (int pass = 0;; pass++) {
        pthread_rwlock_rdlock(&c->table_lock);
        const Entry *e = table_find(c, op, dst.st_dev, dst.st_ino);
        int spoken = e ? name_spoken_of(c, f->name) : 1;
        if (e) f->entry = *e; /* parts are freed only with the core, never while serving */
        f->gen = c->table_gen;
        pthread_rwlock_unlock(&c->table_lock);
        if (e && !spoken) break;
        if (e || pass > 0) return HANDED_BACK;
        /* not entered: perhaps below an entered directory whose answer holds this deep */
        ssize_t dl = dir_path(c, f->dfd, f->canon);
        checked = dl;
        if (dl <= 1 || !plain_bytes(f->canon, (size_t)dl)
            || !enter_from_above(c, op, f->dfd, f->canon, (size_t)dl, &dst)) return HANDED_BACK;
    }

    /* Still where it was judged: renamed or reached through another mount, it is not this entry. */
    ssize_t clen = checked >= 0 ? checked : dir_path(c, f->dfd, f->canon);
    if (clen < 0 || (size_t)clen != f->entry.dir_len || memcmp(f->canon, f->entry.dir, f->entry.dir_len) != 0)
        return HANDED_BACK;
    if (f->slot < 0 && clen == klen && memcmp(f->canon, key, (size_t)klen) == 0) {
        int slot = dir_cache_put(key, (size_t)klen, f->dfd, &dst); /* kept for the next call */
        if (slot >= 0) f->slot = slot;
    }
    size_t nlen = strlen(f->name);
    if ((size_t)clen + 1 + nlen >= sizeof f->canon) return HANDED_BACK;

    f->exists = fstatat(f->dfd, f->name, &f->st, AT_SYMLINK_NOFOLLOW) == 0;
    int absent = !f->exists && errno == ENOENT;
    if (absent && (may & MAY_ENOENT)) {
        if (id_valid(c, n->id)) send_reply(c, n->id, ENOENT, 0);
        return ANSWERED;
    }
    int ok;
    if (!f->exists) ok = absent && (may & MAY_ABSENT);
    else if (S_ISREG(f->st.st_mode)) ok = (may & MAY_REG) || ((may & MAY_REG1) && f->st.st_nlink == 1);
    else ok = S_ISDIR(f->st.st_mode) && (may & MAY_DIR);
    if (!ok && !(f->exists && excl)) return HANDED_BACK;
    if (!id_valid(c, n->id)) return ANSWERED;
    if (f->exists && excl) { send_reply(c, n->id, EEXIST, 0); return ANSWERED; } /* before any decision */

    if (clen == 1) clen = 0; /* the root: "/" + name */
    f->canon[clen] = '/';
    memcpy(f->canon + clen + 1, f->name, nlen + 1);
    f->tlen = (size_t)clen + 1 + nlen;
    return LOCATED;
}

/* Append the records of `count` located names with one lock held (all or none); -> RECORDED, or
 * HANDED_BACK when the window is full or the spool cannot take them (Python then waits or fails closed). */
static int record_found(Core *c, pid_t pid, Found **fs, int count) {
    pthread_mutex_lock(&c->spool_lock);
    int ok = !c->stopped && !c->spool_errno && c->last - c->acked + (uint64_t)count <= c->window;
    for (int i = 0; ok && i < count; i++) ok = record_locked(c, &fs[i]->entry, fs[i]->canon, fs[i]->tlen, pid) == 0;
    pthread_mutex_unlock(&c->spool_lock);
    return ok ? RECORDED : HANDED_BACK;
}

static int prepare(Core *c, const struct seccomp_notif *n, int op, int dirfd, uint64_t addr, int may, int excl,
                   Found *f) {
    int rc = locate(c, n, op, dirfd, addr, may, excl, f);
    if (rc != LOCATED) return rc;
    Found *one[1] = {f};
    return record_found(c, (pid_t)n->pid, one, 1);
}

static int fast_open(Core *c, const struct seccomp_notif *n) {
    const struct seccomp_data *d = &n->data;
    int dirfd;
    uint64_t addr;
    uint32_t flags;
    mode_t mode;
    if (d->nr == c->nr[NR_OPENAT]) {
        dirfd = (int)(int32_t)d->args[0]; addr = d->args[1]; flags = (uint32_t)d->args[2]; mode = d->args[3] & 07777;
    } else if (c->nr[NR_OPEN] >= 0 && d->nr == c->nr[NR_OPEN]) {
        dirfd = AT_FDCWD; addr = d->args[0]; flags = (uint32_t)d->args[1]; mode = d->args[2] & 07777;
    } else if (c->nr[NR_CREAT] >= 0 && d->nr == c->nr[NR_CREAT]) {
        dirfd = AT_FDCWD; addr = d->args[0]; flags = O_CREAT | O_WRONLY | O_TRUNC; mode = d->args[1] & 07777;
    } else {
        return HANDED_BACK;
    }
    int write_open = (flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)) != 0;
    if (flags & O_PATH || (flags & O_TMPFILE) == O_TMPFILE) return HANDED_BACK;
    if (write_open ? (flags & O_DIRECTORY) != 0 : !c->full_audit) return HANDED_BACK;
    /* O_RDONLY|O_TRUNC (Linux truncates) needs a writable reopen: Python does that */
    if ((flags & O_TRUNC) && (flags & O_ACCMODE) == O_RDONLY) return HANDED_BACK;
    int op = write_open ? OP_WRITE : OP_READ;

    Found f;
    int may = op == OP_READ ? MAY_REG | MAY_DIR : MAY_REG1 | ((flags & O_CREAT) ? MAY_ABSENT : 0);
    int rc = prepare(c, n, op, dirfd, addr, may, (flags & O_CREAT) && (flags & O_EXCL), &f);
    if (rc != RECORDED) { found_close(&f); return rc; }
    if (op == OP_READ) {
        __atomic_add_fetch(&c->fast_reads, 1, __ATOMIC_RELAXED);
        send_reply(c, n->id, 0, 1); /* decided and recorded; Landlock bounds reads */
        found_close(&f);
        return ANSWERED;
    }
    __atomic_add_fetch(&c->fast_writes, 1, __ATOMIC_RELAXED);

    int fd = -1, creating = !f.exists;
    TaskIds ids;
    Creds saved;
    int refused = enter_task(c, n, creating, &ids, &saved);
    if (refused) { send_reply(c, n->id, refused, 0); goto out; }
    /* O_NONBLOCK: an existing name swapped for a FIFO after our look must not block this thread (cleared
     * again below); a file we create with O_EXCL is new, regular and has one name, so it needs neither
     * that nor the checks after the open. */
    int ours = (int)((flags & ~(O_CREAT | O_EXCL | O_TRUNC)) | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
    int err = 0, fresh = 0;
    struct stat st;
    if (creating) {
        mode_t plain = mode & ~(mode_t)(S_ISUID | S_ISGID);
        int kernel_mode = with_umask(ids.umask); /* the kernel applies the task's umask, or a default ACL */
        fd = openat(f.dfd, f.name, ours | O_CREAT | O_EXCL, kernel_mode ? plain : 0);
        fresh = fd >= 0;
        if (fd < 0 && errno == EEXIST && !(flags & O_EXCL)) fd = openat(f.dfd, f.name, ours | O_NONBLOCK);
        else if (fd >= 0) {
            if (!kernel_mode && fchmod(fd, plain & ~ids.umask) != 0) err = errno;
            else if ((ids.fsuid != c->own_uid || ids.fsgid != c->own_gid) && fchown(fd, ids.fsuid, ids.fsgid) != 0
                     && errno != EPERM) err = errno;
        }
    } else {
        fd = openat(f.dfd, f.name, ours | O_NONBLOCK);
    }
    if (fd < 0 && !err) err = errno;
    if (!err && !fresh) {
        if (fstat(fd, &st) != 0) err = errno;
        else if (!S_ISREG(st.st_mode)) err = S_ISDIR(st.st_mode) ? EISDIR : EACCES;
        else if (st.st_nlink != 1) err = EACCES; /* linked between our look and the open */
        else if ((flags & O_TRUNC) && ftruncate(fd, 0) != 0) err = errno;
        else if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, ours & ~O_NONBLOCK) != 0) err = errno;
    }
    as_self(&saved);
    if (err) { send_reply(c, n->id, err, 0); goto out; }
    struct seccomp_notif_addfd add;
    memset(&add, 0, sizeof add);
    add.id = n->id;
    add.flags = SECCOMP_ADDFD_FLAG_SEND;
    add.srcfd = (uint32_t)fd;
    add.newfd_flags = (flags & O_CLOEXEC) ? O_CLOEXEC : 0;
    if (ioctl(c->listener, SECCOMP_IOCTL_NOTIF_ADDFD, &add) < 0 && errno != ENOENT && errno != EINPROGRESS)
        send_reply(c, n->id, errno, 0);
out:
    if (fd >= 0) close(fd);
    found_close(&f);
    return ANSWERED;
}

/* utimensat(dirfd, path, times, flags) with a path: a WRITE of the file, recorded like a write-open,
 * then performed by us, as the task, on the very inode judged (through our own descriptor of it). */
static int fast_utimensat(Core *c, const struct seccomp_notif *n) {
    const struct seccomp_data *d = &n->data;
    if (c->nr[NR_UTIMENSAT] < 0 || d->nr != c->nr[NR_UTIMENSAT]) return HANDED_BACK;
    int dirfd = (int)(int32_t)d->args[0];
    uint64_t addr = d->args[1], times_addr = d->args[2];
    int flags = (int)(uint32_t)d->args[3];
    if (addr == 0 || (flags & ~AT_SYMLINK_NOFOLLOW)) return HANDED_BACK;
    struct timespec times[2];
    if (times_addr) {
        struct iovec local = {times, sizeof times};
        struct iovec remote = {(void *)(uintptr_t)times_addr, sizeof times};
        if (process_vm_readv((pid_t)n->pid, &local, 1, &remote, 1, 0) != (ssize_t)sizeof times) return HANDED_BACK;
    }
    Found f;
    int rc = prepare(c, n, OP_WRITE, dirfd, addr, MAY_REG1 | MAY_DIR, 0, &f);
    if (rc != RECORDED) { found_close(&f); return rc; }
    __atomic_add_fetch(&c->fast_writes, 1, __ATOMIC_RELAXED);
    int err = 0, obj = hold_judged(&f, &err);
    TaskIds ids;
    Creds saved;
    if (obj >= 0 && !(err = enter_task(c, n, 0, &ids, &saved))) {
        char self_fd[64];
        snprintf(self_fd, sizeof self_fd, "/proc/self/fd/%d", obj);
        if (utimensat(AT_FDCWD, self_fd, times_addr ? times : NULL, 0) != 0) err = errno;
        as_self(&saved);
    }
    send_reply(c, n->id, err, 0);
    if (obj >= 0) close(obj);
    found_close(&f);
    return ANSWERED;
}

/* execve/execveat of a name that is not there: a shell or execvp probing each PATH entry. The kernel
 * answers ENOENT whatever the policy, and Python answers it before any decision (nothing runs, nothing is
 * recorded); so does this, when the path's directories are reached without a symlink (`/bin` on a merged
 * /usr is one: those go to Python) and the final name is absent. Everything else goes to Python. */
static int fast_exec_absent(Core *c, const struct seccomp_notif *n) {
    const struct seccomp_data *d = &n->data;
    int dirfd;
    uint64_t addr;
    if (c->nr[NR_EXECVE] >= 0 && d->nr == c->nr[NR_EXECVE]) {
        dirfd = AT_FDCWD; addr = d->args[0];
    } else if (c->nr[NR_EXECVEAT] >= 0 && d->nr == c->nr[NR_EXECVEAT] && (uint32_t)d->args[4] == 0) {
        dirfd = (int)(int32_t)d->args[0]; addr = d->args[1];
    } else {
        return HANDED_BACK;
    }
    char path[PATH_LIMIT], dir[PATH_LIMIT];
    const char *name;
    size_t dlen;
    ssize_t plen = read_task_str((pid_t)n->pid, addr, path);
    if (plen <= 0 || !split_path(path, dir, &dlen, &name, NULL)) return HANDED_BACK;
    int rootfd = sandbox_root(c, n), basefd = -1, dfd;
    if (rootfd < 0) return HANDED_BACK;
    if (path[0] == '/') {
        dfd = openat2_dir(rootfd, dir, RESOLVE_IN_ROOT);
    } else {
        char proc[64];
        if (dirfd == AT_FDCWD) snprintf(proc, sizeof proc, "/proc/%u/cwd", n->pid);
        else if (dirfd >= 0) snprintf(proc, sizeof proc, "/proc/%u/fd/%d", n->pid, dirfd);
        else return HANDED_BACK;
        basefd = open(proc, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (basefd < 0) return HANDED_BACK;
        dfd = openat2_dir(basefd, dir, RESOLVE_BENEATH);
    }
    struct stat st;
    int absent = dfd < 0 ? errno == ENOENT : fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT;
    if (dfd >= 0) close(dfd);
    if (basefd >= 0) close(basefd);
    if (!absent) return HANDED_BACK;
    if (id_valid(c, n->id)) send_reply(c, n->id, ENOENT, 0);
    return ANSWERED;
}

/* mkdir(path, mode), mkdirat(dirfd, path, mode): created as the task, with its umask exactly (the
 * kernel would also apply ours), a set-group-id parent's inherited bit kept, as _make does in Python. */
static int fast_mkdir(Core *c, const struct seccomp_notif *n) {
    const struct seccomp_data *d = &n->data;
    int dirfd;
    uint64_t addr;
    mode_t mode;
    if (c->nr[NR_MKDIRAT] >= 0 && d->nr == c->nr[NR_MKDIRAT]) {
        dirfd = (int)(int32_t)d->args[0]; addr = d->args[1]; mode = d->args[2] & 01777;
    } else if (c->nr[NR_MKDIR] >= 0 && d->nr == c->nr[NR_MKDIR]) {
        dirfd = AT_FDCWD; addr = d->args[0]; mode = d->args[1] & 01777;
    } else {
        return HANDED_BACK;
    }
    Found f;
    int rc = prepare(c, n, OP_WRITE, dirfd, addr, MAY_ABSENT, 1, &f); /* an existing name: EEXIST, undecided */
    if (rc != RECORDED) { found_close(&f); return rc; }
    __atomic_add_fetch(&c->fast_writes, 1, __ATOMIC_RELAXED);
    TaskIds ids;
    Creds saved;
    int err = enter_task(c, n, 1, &ids, &saved);
    if (!err) {
        int kernel_mode = with_umask(ids.umask); /* the kernel applies the task's umask, or a default ACL */
        mode_t perms = kernel_mode ? mode & 01777 : mode & ~ids.umask & 01777;
        if (mkdirat(f.dfd, f.name, perms) != 0) err = errno;
        else {
            int obj = openat(f.dfd, f.name, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
            struct stat st;
            if (obj >= 0 && fstat(obj, &st) == 0) {
                mode_t want = perms | (st.st_mode & S_ISGID);
                if (!kernel_mode && (st.st_mode & 07777) != want) {
                    char self_fd[64];
                    snprintf(self_fd, sizeof self_fd, "/proc/self/fd/%d", obj);
                    if (chmod(self_fd, want) != 0) err = errno;
                }
                if (!err) enter_below(c, &f.entry, f.gen, 1, f.canon, f.tlen, &st);
            }
            if (obj >= 0) close(obj);
        }
        as_self(&saved);
    }
    send_reply(c, n->id, err, 0);
    found_close(&f);
    return ANSWERED;
}

/* After the record: count it, act as the task on the name judged (`act` -> 0, or -1 with errno set) and
 * answer with the result. */
static int act_as_task(Core *c, const struct seccomp_notif *n, Found *f, int (*act)(const Found *, const void *),
                       const void *arg) {
    __atomic_add_fetch(&c->fast_writes, 1, __ATOMIC_RELAXED);
    TaskIds ids;
    Creds saved;
    int err = enter_task(c, n, 0, &ids, &saved);
    if (!err) {
        if (act(f, arg) != 0) err = errno;
        as_self(&saved);
    }
    send_reply(c, n->id, err, 0);
    found_close(f);
    return ANSWERED;
}

static int do_unlink(const Found *f, const void *unused) { return unlinkat(f->dfd, f->name, 0); }
static int do_rmdir(const Found *f, const void *unused) { return unlinkat(f->dfd, f->name, AT_REMOVEDIR); }
static int do_symlink(const Found *f, const void *text) { return symlinkat((const char *)text, f->dfd, f->name); }

/* unlink(path), unlinkat(dirfd, path, 0): a regular file's name (directories, AT_REMOVEDIR and anything
 * else go to Python), removed as the task from the directory judged. */
static int fast_unlink(Core *c, const struct seccomp_notif *n) {
    const struct seccomp_data *d = &n->data;
    int dirfd;
    uint64_t addr;
    if (c->nr[NR_UNLINKAT] >= 0 && d->nr == c->nr[NR_UNLINKAT]) {
        if ((int)(uint32_t)d->args[2] != 0) return HANDED_BACK;
        dirfd = (int)(int32_t)d->args[0]; addr = d->args[1];
    } else if (c->nr[NR_UNLINK] >= 0 && d->nr == c->nr[NR_UNLINK]) {
        dirfd = AT_FDCWD; addr = d->args[0];
    } else {
        return HANDED_BACK;
    }
    Found f;
    int rc = prepare(c, n, OP_WRITE, dirfd, addr, MAY_REG | MAY_ENOENT, 0, &f);
    if (rc != RECORDED) { found_close(&f); return rc; }
    return act_as_task(c, n, &f, do_unlink, NULL);
}

/* A rename or link of a regular file: locate both names and record them together (two records, all or
 * none), the destination as `dst_may` allows (with `dst_excl`, an existing one is EEXIST before any
 * decision); then rename (renameat2 with `flags`) or link (`link` set) as the task between the two
 * directories held. -> ANSWERED, or HANDED_BACK before anything was recorded. */
static int two_names(Core *c, const struct seccomp_notif *n, int odir, uint64_t oaddr, int ndir, uint64_t naddr,
                     int dst_may, int dst_excl, int link, unsigned int flags) {
    Found src, dst;
    found_init(&dst);
    int rc = locate(c, n, OP_WRITE, odir, oaddr, MAY_REG, 0, &src);
    if (rc == LOCATED) rc = locate(c, n, OP_WRITE, ndir, naddr, dst_may, dst_excl, &dst);
    if (rc == LOCATED && src.st.st_dev == dst.st.st_dev && src.st.st_ino == dst.st.st_ino && dst.exists)
        rc = HANDED_BACK; /* a name onto another name of itself: the kernel does nothing; Python says so */
    if (rc == LOCATED) {
        Found *both[2] = {&src, &dst};
        rc = record_found(c, (pid_t)n->pid, both, 2);
    }
    if (rc != RECORDED) { found_close(&src); found_close(&dst); return rc; }
    __atomic_add_fetch(&c->fast_writes, 2, __ATOMIC_RELAXED);
    TaskIds ids;
    Creds saved;
    int err = enter_task(c, n, 0, &ids, &saved);
    if (!err) {
        int r = link ? linkat(src.dfd, src.name, dst.dfd, dst.name, 0)
                     : (int)syscall(SYS_renameat2, src.dfd, src.name, dst.dfd, dst.name, flags);
        if (r != 0) err = errno;
        as_self(&saved);
    }
    send_reply(c, n->id, err, 0);
    found_close(&src);
    found_close(&dst);
    return ANSWERED;
}

/* Whether directory `name` under `dfd` holds any entry besides . and .. (-1: it cannot be read here). */
static int dir_has_entries(int dfd, const char *name) {
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -1;
    char buf[4096];
    int found = 0;
    for (;;) {
        long got = syscall(SYS_getdents64, fd, buf, sizeof buf);
        if (got < 0) { found = -1; break; }
        if (got == 0) break;
        for (long at = 0; at < got && !found;) {
            struct dirent64 *ent = (struct dirent64 *)(buf + at);
            const char *nm = ent->d_name;
            if (!(nm[0] == '.' && (nm[1] == '\0' || (nm[1] == '.' && nm[2] == '\0')))) found = 1;
            at += ent->d_reclen;
        }
        if (found) break;
    }
    close(fd);
    return found;
}

/* rmdir(path), unlinkat(dirfd, path, AT_REMOVEDIR) of a plain name: what the kernel answers first is
 * answered first, before any decision, as Python does (ENOENT when nothing is there, ENOTEMPTY when the
 * directory holds anything: git removes directories it thinks empty); then recorded and removed as the
 * task from the directory judged. Not a directory, unreadable, anything else: Python. */
static int fast_rmdir(Core *c, const struct seccomp_notif *n) {
    const struct seccomp_data *d = &n->data;
    int dirfd;
    uint64_t addr;
    if (c->nr[NR_UNLINKAT] >= 0 && d->nr == c->nr[NR_UNLINKAT] && (uint32_t)d->args[2] == AT_REMOVEDIR) {
        dirfd = (int)(int32_t)d->args[0]; addr = d->args[1];
    } else if (c->nr[NR_RMDIR] >= 0 && d->nr == c->nr[NR_RMDIR]) {
        dirfd = AT_FDCWD; addr = d->args[0];
    } else {
        return HANDED_BACK;
    }
    Found f;
    int rc = locate(c, n, OP_WRITE, dirfd, addr, MAY_DIR | MAY_ENOENT, 0, &f);
    if (rc == LOCATED) {
        int full = dir_has_entries(f.dfd, f.name);
        if (full < 0) rc = HANDED_BACK;
        else if (full) {
            if (id_valid(c, n->id)) send_reply(c, n->id, ENOTEMPTY, 0);
            rc = ANSWERED;
        } else {
            Found *one[1] = {&f};
            rc = record_found(c, (pid_t)n->pid, one, 1);
        }
    }
    if (rc != RECORDED) { found_close(&f); return rc; }
    return act_as_task(c, n, &f, do_rmdir, NULL);
}

/* symlink(text, path), symlinkat(text, dirfd, path) at a plain name where nothing is: the name recorded
 * (what Python records; the text is read once, before), made as the task in the directory judged. An
 * existing name is EEXIST before any decision. A text that cannot be read whole, or is empty: Python. */
static int fast_symlink(Core *c, const struct seccomp_notif *n) {
    const struct seccomp_data *d = &n->data;
    int dirfd;
    uint64_t addr;
    if (c->nr[NR_SYMLINKAT] >= 0 && d->nr == c->nr[NR_SYMLINKAT]) {
        dirfd = (int)(int32_t)d->args[1]; addr = d->args[2];
    } else if (c->nr[NR_SYMLINK] >= 0 && d->nr == c->nr[NR_SYMLINK]) {
        dirfd = AT_FDCWD; addr = d->args[1];
    } else {
        return HANDED_BACK;
    }
    char text[PATH_LIMIT];
    ssize_t tlen = read_task_str((pid_t)n->pid, d->args[0], text);
    if (tlen <= 0) return HANDED_BACK;
    Found f;
    int rc = prepare(c, n, OP_WRITE, dirfd, addr, MAY_ABSENT, 1, &f);
    if (rc != RECORDED) { found_close(&f); return rc; }
    return act_as_task(c, n, &f, do_symlink, text);
}

/* rename, renameat, renameat2 with no flags or RENAME_NOREPLACE, of a regular file onto nothing or a
 * regular file: both names judged (two records, written together), renamed as the task between the two
 * directories held. Directories (whose trees Python vets), exchanges and anything else go to Python. */
static int fast_rename(Core *c, const struct seccomp_notif *n) {
    const struct seccomp_data *d = &n->data;
    int odir, ndir;
    uint64_t oaddr, naddr;
    unsigned int flags = 0;
    if (c->nr[NR_RENAMEAT2] >= 0 && d->nr == c->nr[NR_RENAMEAT2]) {
        flags = (unsigned int)d->args[4];
        if (flags & ~RENAME_NOREPLACE) return HANDED_BACK;
        odir = (int)(int32_t)d->args[0]; oaddr = d->args[1]; ndir = (int)(int32_t)d->args[2]; naddr = d->args[3];
    } else if (c->nr[NR_RENAMEAT] >= 0 && d->nr == c->nr[NR_RENAMEAT]) {
        odir = (int)(int32_t)d->args[0]; oaddr = d->args[1]; ndir = (int)(int32_t)d->args[2]; naddr = d->args[3];
    } else if (c->nr[NR_RENAME] >= 0 && d->nr == c->nr[NR_RENAME]) {
        odir = ndir = AT_FDCWD; oaddr = d->args[0]; naddr = d->args[1];
    } else {
        return HANDED_BACK;
    }
    return two_names(c, n, odir, oaddr, ndir, naddr, MAY_ABSENT | MAY_REG, 0, 0, flags);
}

/* link(old, new), linkat(olddir, old, newdir, new, 0) of a regular file to a name where nothing is: both
 * names judged (two records, written together: what Python records), linked as the task between the two
 * directories held, the source not followed. AT_SYMLINK_FOLLOW, AT_EMPTY_PATH, symlinks and directories
 * go to Python. (git links every loose object it writes from its temporary name.) */
static int fast_link(Core *c, const struct seccomp_notif *n) {
    const struct seccomp_data *d = &n->data;
    int odir, ndir;
    uint64_t oaddr, naddr;
    if (c->nr[NR_LINKAT] >= 0 && d->nr == c->nr[NR_LINKAT]) {
        if ((uint32_t)d->args[4] != 0) return HANDED_BACK;
        odir = (int)(int32_t)d->args[0]; oaddr = d->args[1]; ndir = (int)(int32_t)d->args[2]; naddr = d->args[3];
    } else if (c->nr[NR_LINK] >= 0 && d->nr == c->nr[NR_LINK]) {
        odir = ndir = AT_FDCWD; oaddr = d->args[0]; naddr = d->args[1];
    } else {
        return HANDED_BACK;
    }
    return two_names(c, n, odir, oaddr, ndir, naddr, MAY_ABSENT, 1, 1, 0);
}

/* The task's descriptor `fd` as our own: the same open file description (pidfd_getfd). -> fd, or -1. */
static int task_file(const struct seccomp_notif *n, int fd) {
    int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)n->pid, PIDFD_THREAD);
    if (pidfd < 0) return -1;
    int ours = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
    close(pidfd);
    return ours;
}

/* An attribute change by descriptor (fchmod, fchown, utimensat(fd, NULL, ...)): a WRITE of the file the
 * descriptor holds, decided on its canonical path (the kernel's name for it now, whose directory must be
 * an entered one and whose name must still be this very inode), then performed by us, as the task, on our
 * duplicate of the task's open file. Never CONTINUEd: the descriptor table is the task's, and a thread
 * that dup2()s another file onto the number after our look would have the kernel change that one. */
enum { K_CHMOD, K_CHOWN, K_TIMES };

typedef struct {
    int kind;
    mode_t mode;
    uid_t uid;
    gid_t gid;
    const struct timespec *times; /* K_TIMES: NULL for now */
    int through_proc;             /* chmod("/proc/self/fd/N"): the kernel follows the descriptor's link, so an
                                   * O_PATH descriptor is changed too (glibc's fchmodat(AT_SYMLINK_NOFOLLOW)) */
} AttrChange;

/* Judge and perform an attribute change of the file `obj` (our duplicate of the task's open file; closed
 * here): a WRITE of its canonical path (the kernel's name for it now, whose directory must be an entered
 * one and whose name must still be this very inode; a regular file with one name, or a directory), then
 * performed by us, as the task, on that duplicate. -> ANSWERED, or HANDED_BACK before anything was
 * recorded. */
static int attr_by_file(Core *c, const struct seccomp_notif *n, int obj, const AttrChange *a) {
    Found f;
    found_init(&f);
    int rc = HANDED_BACK;
    struct stat ost;
    int rootfd = sandbox_root(c, n);
    int usable = rootfd >= 0 && fstat(obj, &ost) == 0
                 && ((S_ISREG(ost.st_mode) && ost.st_nlink == 1) || S_ISDIR(ost.st_mode));
    ssize_t plen = usable ? dir_path(c, obj, f.path) : -1;
    size_t dlen;
    if (plen > 1 && plain_bytes(f.path, (size_t)plen) && split_path(f.path, f.dir, &dlen, &f.name, NULL)) {
        f.dfd = openat2_dir(rootfd, f.dir, RESOLVE_IN_ROOT);
        struct stat dst;
        if (f.dfd >= 0 && fstat(f.dfd, &dst) == 0) {
            pthread_rwlock_rdlock(&c->table_lock);
            const Entry *e = table_find(c, OP_WRITE, dst.st_dev, dst.st_ino);
            int spoken = e ? name_spoken_of(c, f.name) : 1;
            if (e) f.entry = *e;
            pthread_rwlock_unlock(&c->table_lock);
            size_t nlen = strlen(f.name);
            ssize_t clen = (!e || spoken) ? -1 : dir_path(c, f.dfd, f.canon);
            if (clen > 0 && (size_t)clen == f.entry.dir_len && memcmp(f.canon, f.entry.dir, (size_t)clen) == 0
                && (size_t)clen + 1 + nlen < sizeof f.canon
                && fstatat(f.dfd, f.name, &f.st, AT_SYMLINK_NOFOLLOW) == 0
                && f.st.st_dev == ost.st_dev && f.st.st_ino == ost.st_ino) {
                if (!id_valid(c, n->id)) {
                    rc = ANSWERED;
                } else {
                    if (clen == 1) clen = 0;
                    f.canon[clen] = '/';
                    memcpy(f.canon + clen + 1, f.name, nlen + 1);
                    f.tlen = (size_t)clen + 1 + nlen;
                    Found *one[1] = {&f};
                    if (record_found(c, (pid_t)n->pid, one, 1) == RECORDED) {
                        __atomic_add_fetch(&c->fast_writes, 1, __ATOMIC_RELAXED);
                        TaskIds ids;
                        Creds saved;
                        int err = enter_task(c, n, 0, &ids, &saved);
                        if (!err) {
                            int r;
                            if (a->through_proc) {
                                char self_fd[64];
                                snprintf(self_fd, sizeof self_fd, "/proc/self/fd/%d", obj);
                                r = chmod(self_fd, a->mode);
                            } else {
                                r = a->kind == K_CHMOD ? fchmod(obj, a->mode)
                                  : a->kind == K_CHOWN ? fchown(obj, a->uid, a->gid)
                                  : futimens(obj, a->times);
                            }
                            if (r != 0) err = errno;
                            as_self(&saved);
                        }
                        send_reply(c, n->id, err, 0);
                        rc = ANSWERED;
                    }
                }
            }
        }
    }
    close(obj);
    found_close(&f);
    return rc;
}

/* An attribute change by descriptor (fchmod, fchown, utimensat(fd, NULL, ...)), see attr_by_file. Never
 * CONTINUEd: the descriptor table is the task's, and a thread that dup2()s another file onto the number
 * after our look would have the kernel change that one. */
static int fast_fd_attr(Core *c, const struct seccomp_notif *n) {
    const struct seccomp_data *d = &n->data;
    int fd;
    AttrChange a = {0};
    struct timespec times[2];
    if (c->nr[NR_FCHMOD] >= 0 && d->nr == c->nr[NR_FCHMOD]) {
        if (d->args[1] & (S_ISUID | S_ISGID)) return HANDED_BACK; /* refused and recorded by Python */
        fd = (int)(int32_t)d->args[0]; a.kind = K_CHMOD; a.mode = (mode_t)(d->args[1] & 07777);
    } else if (c->nr[NR_FCHOWN] >= 0 && d->nr == c->nr[NR_FCHOWN]) {
        fd = (int)(int32_t)d->args[0]; a.kind = K_CHOWN;
        a.uid = (uid_t)(uint32_t)d->args[1]; a.gid = (gid_t)(uint32_t)d->args[2];
    } else if (c->nr[NR_UTIMENSAT] >= 0 && d->nr == c->nr[NR_UTIMENSAT] && d->args[1] == 0
               && (uint32_t)d->args[3] == 0) {
        fd = (int)(int32_t)d->args[0]; a.kind = K_TIMES;
        uint64_t times_addr = d->args[2];
        if (times_addr) { /* read once, before the decision, as Python does */
            struct iovec local = {times, sizeof times};
            struct iovec remote = {(void *)(uintptr_t)times_addr, sizeof times};
            if (process_vm_readv((pid_t)n->pid, &local, 1, &remote, 1, 0) != (ssize_t)sizeof times)
                return HANDED_BACK;
            a.times = times;
        }
    } else {
        return HANDED_BACK;
    }
    if (fd < 0) return HANDED_BACK;
    int obj = task_file(n, fd);
    if (obj < 0) return HANDED_BACK;
    return attr_by_file(c, n, obj, &a);
}

/* Is "/proc" in the sandbox's root a proc file system (so "/proc/self/fd/N" is the task's descriptor N)?
 * Looked at once: the root is the same for every task and its mounts do not change. */
static int sandbox_proc_is_procfs(Core *c, int rootfd) {
    int known = __atomic_load_n(&c->proc_checked, __ATOMIC_ACQUIRE);
    if (known) return known > 0;
    int fd = openat(rootfd, "proc", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct statfs sf;
    int ok = fd >= 0 && fstatfs(fd, &sf) == 0 && sf.f_type == PROC_SUPER_MAGIC;
    if (fd >= 0) close(fd);
    __atomic_store_n(&c->proc_checked, ok ? 1 : -1, __ATOMIC_RELEASE);
    return ok;
}

/* chmod("/proc/self/fd/N", mode), which glibc's fchmodat(..., AT_SYMLINK_NOFOLLOW) makes after opening the
 * name O_PATH (tar sets every mode that way): the task's descriptor N, changed as fchmod(N) would be, except
 * that an O_PATH descriptor is changed too (the kernel follows the link). Only for a thread-group leader
 * (its descriptor table is /proc/self's), and only where /proc is a proc file system. */
static const char PROC_SELF_FD[] = "/proc/self/fd/";

/* `path` starts with PROC_SELF_FD and `mode` has no set-uid bit (fast_path_attr looked). */
static int fast_proc_fd_chmod(Core *c, const struct seccomp_notif *n, const char *path, mode_t mode) {
    size_t pl = sizeof PROC_SELF_FD - 1;
    if (!path[pl]) return HANDED_BACK;
    long fd = 0;
    for (const char *p = path + pl; *p; p++) {
        if (*p < '0' || *p > '9' || fd > 1000000) return HANDED_BACK;
        fd = fd * 10 + (*p - '0');
    }
    if (path[pl] == '0' && path[pl + 1]) return HANDED_BACK; /* "/proc/self/fd/05": Python's */
    int rootfd = sandbox_root(c, n);
    if (rootfd < 0 || !sandbox_proc_is_procfs(c, rootfd)) return HANDED_BACK;
    int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)n->pid, 0); /* EINVAL: not a thread-group leader */
    if (pidfd < 0) return HANDED_BACK;
    int obj = (int)syscall(SYS_pidfd_getfd, pidfd, (int)fd, 0);
    close(pidfd);
    if (obj < 0) return HANDED_BACK;
    struct stat st;
    if (fstat(obj, &st) != 0 || ((mode & S_ISGID) && !S_ISDIR(st.st_mode))) { close(obj); return HANDED_BACK; }
    AttrChange a = {.kind = K_CHMOD, .mode = mode, .through_proc = 1};
    return attr_by_file(c, n, obj, &a);
}

/* chmod(path, mode), fchmodat(dirfd, path, mode, 0), fchownat(dirfd, path, uid, gid, 0 or
 * AT_SYMLINK_NOFOLLOW) of a regular file or a directory (never a symlink: those go to Python): performed
 * by us, as the task, on an O_PATH descriptor of the very inode judged. Set-id modes go to Python, which
 * refuses and records them (S_ISGID on a directory is allowed there, and here). */
static int fast_path_attr(Core *c, const struct seccomp_notif *n) {
    const struct seccomp_data *d = &n->data;
    int dirfd, chown_call = 0;
    uint64_t addr;
    mode_t mode = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    if (c->nr[NR_CHMOD] >= 0 && d->nr == c->nr[NR_CHMOD]) {
        dirfd = AT_FDCWD; addr = d->args[0]; mode = d->args[1] & 07777;
    } else if (c->nr[NR_FCHMODAT] >= 0 && d->nr == c->nr[NR_FCHMODAT]) {
        dirfd = (int)(int32_t)d->args[0]; addr = d->args[1]; mode = d->args[2] & 07777;
    } else if (c->nr[NR_FCHOWNAT] >= 0 && d->nr == c->nr[NR_FCHOWNAT]) {
        if ((uint32_t)d->args[4] & ~(uint32_t)AT_SYMLINK_NOFOLLOW) return HANDED_BACK;
        dirfd = (int)(int32_t)d->args[0]; addr = d->args[1];
        uid = (uid_t)(uint32_t)d->args[2]; gid = (gid_t)(uint32_t)d->args[3];
        chown_call = 1;
    } else {
        return HANDED_BACK;
    }
    if (mode & S_ISUID) return HANDED_BACK;
    if (!chown_call) { /* chmod("/proc/self/fd/N"): the descriptor, not a path (see fast_proc_fd_chmod) */
        char procpath[64];
        size_t pl = sizeof PROC_SELF_FD - 1;
        struct iovec local = {procpath, sizeof procpath - 1};
        struct iovec remote = {(void *)(uintptr_t)addr, sizeof procpath - 1};
        ssize_t got = process_vm_readv((pid_t)n->pid, &local, 1, &remote, 1, 0);
        if (got > (ssize_t)pl && memcmp(procpath, PROC_SELF_FD, pl) == 0) {
            procpath[got] = '\0';
            return strnlen(procpath, (size_t)got) < (size_t)got ? fast_proc_fd_chmod(c, n, procpath, mode)
                                                                 : HANDED_BACK;
        }
    }
    Found f;
    int rc = locate(c, n, OP_WRITE, dirfd, addr, MAY_REG1 | MAY_DIR, 0, &f);
    if (rc == LOCATED && !chown_call && (mode & S_ISGID) && !S_ISDIR(f.st.st_mode)) rc = HANDED_BACK;
    if (rc == LOCATED) {
        Found *one[1] = {&f};
        rc = record_found(c, (pid_t)n->pid, one, 1);
    }
    if (rc != RECORDED) { found_close(&f); return rc; }
    __atomic_add_fetch(&c->fast_writes, 1, __ATOMIC_RELAXED);
    int err = 0, obj = hold_judged(&f, &err);
    TaskIds ids;
    Creds saved;
    if (obj >= 0 && !(err = enter_task(c, n, 0, &ids, &saved))) {
        if (chown_call) {
            if (fchownat(obj, "", uid, gid, AT_EMPTY_PATH) != 0) err = errno;
        } else {
            char self_fd[64];
            snprintf(self_fd, sizeof self_fd, "/proc/self/fd/%d", obj);
            if (chmod(self_fd, mode) != 0) err = errno;
        }
        as_self(&saved);
    }
    send_reply(c, n->id, err, 0);
    if (obj >= 0) close(obj);
    found_close(&f);
    return ANSWERED;
}

/* ---- Python methods ------------------------------------------------------------------------------- */

static int Core_init(Core *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"listener", "arch", "numbers", "full_audit", "privileged", NULL};
    unsigned int arch;
    int full_audit = 0, privileged = 0;
    PyObject *numbers;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iIO!|pp", kwlist, &self->listener, &arch, &PyDict_Type, &numbers,
                                     &full_audit, &privileged))
        return -1;
    for (int i = 0; i < NR_COUNT; i++) {
        PyObject *v = PyDict_GetItemString(numbers, NR_NAMES[i]); /* borrowed */
        self->nr[i] = v ? (int)PyLong_AsLong(v) : -1;
        if (PyErr_Occurred()) return -1;
    }
    self->arch = arch;
    self->full_audit = full_audit;
    self->privileged = privileged;
    self->own_uid = geteuid();
    self->own_gid = getegid();
    self->spool_fd = -1;
    self->wake_fd = -1;
    self->window = UINT64_MAX;
    self->enabled = 1;
    self->rootfd = -1;
    pthread_mutex_init(&self->root_lock, NULL);
    pthread_mutex_init(&self->id_lock, NULL);
    pthread_mutex_init(&self->umask_lock, NULL);
    pthread_mutex_init(&self->spool_lock, NULL);
    pthread_mutex_init(&self->q_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&self->q_cond, &ca);
    pthread_condattr_destroy(&ca);
    for (int i = 0; i < RECEIVERS; i++) pthread_mutex_init(&self->recv_guard[i], NULL);
    pthread_rwlock_init(&self->table_lock, NULL);
    self->nbuckets = 4096;
    self->buckets = calloc(self->nbuckets, sizeof(Entry *));
    if (!self->buckets) { PyErr_NoMemory(); return -1; }
    return 0;
}

static void core_stop(Core *c);

static void Core_dealloc(Core *self) {
    Py_BEGIN_ALLOW_THREADS
    core_stop(self);
    Py_END_ALLOW_THREADS
    while (self->q_head) { Pending *p = self->q_head; self->q_head = p->next; free(p); }
    if (self->buckets) { table_clear(self); free(self->buckets); }
    while (self->retired) { Entry *n = self->retired->next; entry_free(self->retired); self->retired = n; }
    if (self->rootfd >= 0) close(self->rootfd);
    for (int i = 0; i < UMASK_SLOTS; i++)
        if (self->umask_slots[i].pid && self->umask_slots[i].pidfd >= 0) close(self->umask_slots[i].pidfd);
    for (size_t i = 0; i < self->nglobs; i++) free(self->globs[i]);
    free(self->globs);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Core_attach_spool(Core *self, PyObject *args) {
    int fd;
    unsigned long long last;
    if (!PyArg_ParseTuple(args, "iK", &fd, &last)) return NULL;
    pthread_mutex_lock(&self->spool_lock);
    self->spool_fd = fd;
    self->last = last;
    self->acked = last;
    pthread_mutex_unlock(&self->spool_lock);
    Py_RETURN_NONE;
}

static PyObject *Core_detach_spool(Core *self, PyObject *unused) {
    pthread_mutex_lock(&self->spool_lock);
    self->spool_fd = -1;
    self->wake_fd = -1;
    self->stopped = 1;
    pthread_mutex_unlock(&self->spool_lock);
    Py_RETURN_NONE;
}

/* append(head: bytes) -> n. head is a JSON object's text without its closing brace. */
static PyObject *Core_append(Core *self, PyObject *args) {
    Py_buffer head;
    if (!PyArg_ParseTuple(args, "y*", &head)) return NULL;
    uint64_t n;
    int err;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->spool_lock);
    n = spool_write_locked(self, head.buf, (size_t)head.len);
    err = errno;
    pthread_mutex_unlock(&self->spool_lock);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&head);
    if (!n) { errno = err; return PyErr_SetFromErrno(PyExc_OSError); }
    return PyLong_FromUnsignedLongLong(n);
}

static PyObject *Core_set_flow(Core *self, PyObject *args) {
    unsigned long long acked, window;
    int stopped;
    if (!PyArg_ParseTuple(args, "KKp", &acked, &window, &stopped)) return NULL;
    pthread_mutex_lock(&self->spool_lock);
    if (acked > self->acked) self->acked = acked;
    self->window = window;
    if (stopped) self->stopped = 1;
    if (self->acked >= self->last) self->pending = 0;
    pthread_mutex_unlock(&self->spool_lock);
    Py_RETURN_NONE;
}

static PyObject *Core_set_wake(Core *self, PyObject *args) {
    int fd;
    if (!PyArg_ParseTuple(args, "i", &fd)) return NULL;
    pthread_mutex_lock(&self->spool_lock);
    self->wake_fd = fd;
    self->pending = 0;
    pthread_mutex_unlock(&self->spool_lock);
    Py_RETURN_NONE;
}

static PyObject *Core_set_globs(Core *self, PyObject *args) {
    PyObject *seq;
    if (!PyArg_ParseTuple(args, "O", &seq)) return NULL;
    PyObject *fast = PySequence_Fast(seq, "globs must be a sequence of bytes");
    if (!fast) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    if (count > MAX_GLOBS) { Py_DECREF(fast); PyErr_SetString(PyExc_ValueError, "too many globs"); return NULL; }
    char **globs = calloc((size_t)count + 1, sizeof(char *));
    for (Py_ssize_t i = 0; i < count; i++) {
        char *s;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(PySequence_Fast_GET_ITEM(fast, i), &s, &len) < 0) {
            for (Py_ssize_t j = 0; j < i; j++) free(globs[j]);
            free(globs);
            Py_DECREF(fast);
            return NULL;
        }
        globs[i] = strndup(s, (size_t)len);
    }
    Py_DECREF(fast);
    pthread_rwlock_wrlock(&self->table_lock);
    for (size_t i = 0; i < self->nglobs; i++) free(self->globs[i]);
    free(self->globs);
    self->globs = globs;
    self->nglobs = (size_t)count;
    table_clear(self);
    pthread_rwlock_unlock(&self->table_lock);
    Py_RETURN_NONE;
}

/* add(op, dev, ino, dir: bytes, parts: (bytes, bytes, bytes), inherit=0): the record of any plain name in
 * `dir` is parts[0] + target + parts[1] + pid + parts[2] (then ,"n":N}); the same holds `inherit` levels of
 * plain directories down (see enter_made). */
static PyObject *Core_add(Core *self, PyObject *args) {
    int op, inherit = 0;
    unsigned long long dev, ino;
    Py_buffer dir, p0, p1, p2;
    if (!PyArg_ParseTuple(args, "iKKy*(y*y*y*)|i", &op, &dev, &ino, &dir, &p0, &p1, &p2, &inherit)) return NULL;
    Entry *e = calloc(1, sizeof *e);
    e->inherit = inherit;
    Py_buffer *parts[3] = {&p0, &p1, &p2};
    e->op = op;
    e->dev = (dev_t)dev;
    e->ino = (ino_t)ino;
    e->dir = strndup(dir.buf, (size_t)dir.len);
    e->dir_len = (size_t)dir.len;
    for (int i = 0; i < 3; i++) {
        e->part[i] = malloc((size_t)parts[i]->len + 1);
        memcpy(e->part[i], parts[i]->buf, (size_t)parts[i]->len);
        e->part_len[i] = (size_t)parts[i]->len;
    }
    for (int i = 0; i < 3; i++) PyBuffer_Release(parts[i]);
    PyBuffer_Release(&dir);
    pthread_rwlock_wrlock(&self->table_lock);
    Entry *old = table_find(self, op, e->dev, e->ino);
    if (old != NULL && old->dir_len == e->dir_len && memcmp(old->dir, e->dir, e->dir_len) == 0) {
        pthread_rwlock_unlock(&self->table_lock);
        entry_free(e);
        Py_RETURN_FALSE;
    }
    if (old != NULL) {
        /* the directory was renamed: the newest judgement replaces the old one. The old entry is kept
         * (a reader may hold a copy of its parts) and freed with the core. */
        Entry **link = &self->buckets[hash_key(op, e->dev, e->ino) % self->nbuckets];
        while (*link != old) link = &(*link)->next;
        *link = old->next;
        old->next = self->retired;
        self->retired = old;
        self->nentries--;
    }
    if (self->nentries > 1000000) {
        pthread_rwlock_unlock(&self->table_lock);
        entry_free(e);
        Py_RETURN_FALSE;
    }
    size_t b = hash_key(op, e->dev, e->ino) % self->nbuckets;
    e->next = self->buckets[b];
    self->buckets[b] = e;
    self->nentries++;
    pthread_rwlock_unlock(&self->table_lock);
    Py_RETURN_TRUE;
}

static PyObject *Core_clear(Core *self, PyObject *unused) {
    pthread_rwlock_wrlock(&self->table_lock);
    table_clear(self);
    pthread_rwlock_unlock(&self->table_lock);
    Py_RETURN_NONE;
}

/* ---- receiving ------------------------------------------------------------------------------------ */

/* Stopping a receiver that waits in RECV while tasks still live takes a signal (RECV cannot time out).
 * It is sent only while the receiver does not hold its recv_guard, that is while it waits in RECV (or is
 * about to): never in the middle of answering, where it could interrupt an ADDFD. No SA_RESTART, so the
 * interrupted RECV returns EINTR. The handler does nothing, and the signal is only ever sent to a
 * receiver, by tid. */
#define WAKE_SIGNAL (SIGRTMIN + 7)

static void wake_handler(int sig) { (void)sig; }

static void queue_for_python(Core *c, const struct seccomp_notif *n) {
    Pending *p = malloc(sizeof *p);
    if (!p) { /* cannot queue it: refuse it rather than leave the task waiting */
        send_reply(c, n->id, ENOMEM, 0);
        return;
    }
    p->n = *n;
    p->next = NULL;
    pthread_mutex_lock(&c->q_lock);
    if (c->q_tail) c->q_tail->next = p; else c->q_head = p;
    c->q_tail = p;
    __atomic_add_fetch(&c->handed_back, 1, __ATOMIC_RELAXED);
    pthread_cond_signal(&c->q_cond);
    pthread_mutex_unlock(&c->q_lock);
}

static int answered_here(Core *c, const struct seccomp_notif *n) {
    if (__atomic_load_n(&c->nunsettled, __ATOMIC_RELAXED) > 0) umask_settled(c, (pid_t)n->pid);
    if (n->data.arch == c->arch && fast_umask(c, n) == ANSWERED) return 1;
    return c->enabled && n->data.arch == c->arch
           && (fast_open(c, n) == ANSWERED || fast_utimensat(c, n) == ANSWERED
               || fast_mkdir(c, n) == ANSWERED || fast_unlink(c, n) == ANSWERED
               || fast_rename(c, n) == ANSWERED || fast_link(c, n) == ANSWERED
               || fast_exec_absent(c, n) == ANSWERED || fast_rmdir(c, n) == ANSWERED
               || fast_symlink(c, n) == ANSWERED
               || fast_fd_attr(c, n) == ANSWERED
               || fast_path_attr(c, n) == ANSWERED);
}

typedef struct { Core *core; int index; } ReceiverArg;

/* One receiver: wait in RECV, answer what the fast path may, queue the rest for Python. Every other
 * signal stays blocked here, so the process's signals go to the interpreter's threads. */
static void *receiver_main(void *arg) {
    ReceiverArg a = *(ReceiverArg *)arg;
    free(arg);
    Core *c = a.core;
    pthread_mutex_t *guard = &c->recv_guard[a.index];
    sigset_t all;
    sigfillset(&all);
    sigdelset(&all, WAKE_SIGNAL);
    pthread_sigmask(SIG_SETMASK, &all, NULL);
    lean_thread(c);
    own_fs_thread();
    dir_cache_init();
    is_receiver = 1;
    struct seccomp_notif n;
    pthread_mutex_lock(guard);
    while (!__atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE)) {
        memset(&n, 0, sizeof n);
        pthread_mutex_unlock(guard);
        int r = ioctl(c->listener, SECCOMP_IOCTL_NOTIF_RECV, &n);
        int e = errno;
        pthread_mutex_lock(guard);
        if (r < 0) {
            if (e == EINTR || e == EAGAIN) continue;
            if (e == ENOENT) { /* the task went away before we took it, or every task is gone */
                struct pollfd p = {c->listener, POLLIN, 0};
                if (poll(&p, 1, 0) == 1 && !(p.revents & POLLIN)) break; /* hung up */
                continue;
            }
            pthread_mutex_lock(&c->q_lock);
            if (!c->recv_errno) c->recv_errno = e;
            pthread_cond_broadcast(&c->q_cond);
            pthread_mutex_unlock(&c->q_lock);
            if (e == EBADF || e == ENOTTY || e == EINVAL) break; /* the listener is gone */
            struct timespec ms10 = {0, 10 * 1000 * 1000};
            nanosleep(&ms10, NULL);
            continue;
        }
        if (!answered_here(c, &n)) queue_for_python(c, &n);
    }
    pthread_mutex_lock(&c->q_lock);
    c->hung = 1; /* whatever ended this receiver ends receiving: Python sees it once the queue is empty */
    pthread_cond_broadcast(&c->q_cond);
    pthread_mutex_unlock(&c->q_lock);
    dir_cache_free();
    __atomic_store_n(&c->receiver_live[a.index], 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(guard);
    return NULL;
}

/* Start the receivers (once). -> 0, or an errno. Called with the GIL released. */
static int core_start(Core *c) {
    static int handler_installed;
    pthread_mutex_lock(&c->q_lock);
    if (c->nreceivers || c->stopping) { pthread_mutex_unlock(&c->q_lock); return 0; }
    if (!__atomic_load_n(&handler_installed, __ATOMIC_ACQUIRE)) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = wake_handler;
        sigemptyset(&sa.sa_mask);
        if (sigaction(WAKE_SIGNAL, &sa, NULL) != 0) { int e = errno; pthread_mutex_unlock(&c->q_lock); return e; }
        __atomic_store_n(&handler_installed, 1, __ATOMIC_RELEASE);
    }
    for (int i = 0; i < RECEIVERS; i++) {
        ReceiverArg *a = malloc(sizeof *a);
        if (!a) break;
        a->core = c;
        a->index = i;
        __atomic_store_n(&c->receiver_live[i], 1, __ATOMIC_RELEASE);
        if (pthread_create(&c->receivers[i], NULL, receiver_main, a) != 0) {
            __atomic_store_n(&c->receiver_live[i], 0, __ATOMIC_RELEASE);
            free(a);
            break;
        }
        c->nreceivers = i + 1;
    }
    int started = c->nreceivers;
    pthread_mutex_unlock(&c->q_lock);
    return started ? 0 : EAGAIN;
}

/* Stop and join the receivers (idempotent). Called with the GIL released. */
static void core_stop(Core *c) {
    pthread_mutex_lock(&c->q_lock);
    int n = c->nreceivers;
    int first = !c->stopping;
    __atomic_store_n(&c->stopping, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&c->q_cond);
    pthread_mutex_unlock(&c->q_lock);
    if (!first) return;
    for (int i = 0; i < n; i++) {
        while (__atomic_load_n(&c->receiver_live[i], __ATOMIC_ACQUIRE)) {
            pthread_mutex_lock(&c->recv_guard[i]); /* now it waits in RECV, or is about to, or has ended */
            if (__atomic_load_n(&c->receiver_live[i], __ATOMIC_ACQUIRE)) pthread_kill(c->receivers[i], WAKE_SIGNAL);
            pthread_mutex_unlock(&c->recv_guard[i]);
            struct timespec ms1 = {0, 1000 * 1000};
            nanosleep(&ms1, NULL);
        }
        pthread_join(c->receivers[i], NULL);
    }
}

/* next(timeout_ms) -> bytes (a notification for Python to answer) | None (nothing yet) | False (the
 * listener hung up: every task is gone, or the core was stopped). The receivers answer the fast path
 * themselves; they are started by the first call. */
static PyObject *Core_next(Core *self, PyObject *args) {
    int timeout;
    if (!PyArg_ParseTuple(args, "i", &timeout)) return NULL;
    Pending *p = NULL;
    int status = 0; /* 0 nothing, 1 one for Python, 2 hung up or stopped, 3 error */
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    err = core_start(self);
    if (err) status = 3;
    else {
        struct timespec dl;
        clock_gettime(CLOCK_MONOTONIC, &dl);
        if (timeout > 0) {
            dl.tv_sec += timeout / 1000;
            dl.tv_nsec += (long)(timeout % 1000) * 1000000L;
            if (dl.tv_nsec >= 1000000000L) { dl.tv_sec++; dl.tv_nsec -= 1000000000L; }
        }
        pthread_mutex_lock(&self->q_lock);
        for (;;) {
            if (self->q_head) {
                p = self->q_head;
                self->q_head = p->next;
                if (!self->q_head) self->q_tail = NULL;
                status = 1;
                break;
            }
            if (self->recv_errno) { err = self->recv_errno; self->recv_errno = 0; status = 3; break; }
            if (self->hung || self->stopping) { status = 2; break; }
            if (timeout <= 0) break;
            if (pthread_cond_timedwait(&self->q_cond, &self->q_lock, &dl) == ETIMEDOUT && !self->q_head
                && !self->recv_errno && !self->hung && !self->stopping)
                break;
        }
        pthread_mutex_unlock(&self->q_lock);
    }
    Py_END_ALLOW_THREADS
    if (status == 0) Py_RETURN_NONE;
    if (status == 2) Py_RETURN_FALSE;
    if (status == 3) { errno = err; return PyErr_SetFromErrno(PyExc_OSError); }
    PyObject *out = PyBytes_FromStringAndSize((const char *)&p->n, sizeof p->n);
    free(p);
    return out;
}

/* stop(): end the receivers (the session is over, or the listener is about to be closed). */
static PyObject *Core_stop(Core *self, PyObject *unused) {
    Py_BEGIN_ALLOW_THREADS
    core_stop(self);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *Core_counts(Core *self, PyObject *unused) {
    return Py_BuildValue("{sKsKsKsnsK}", "fast_writes", (unsigned long long)__atomic_load_n(&self->fast_writes, __ATOMIC_RELAXED),
                         "fast_reads", (unsigned long long)__atomic_load_n(&self->fast_reads, __ATOMIC_RELAXED),
                         "handed_back", (unsigned long long)__atomic_load_n(&self->handed_back, __ATOMIC_RELAXED),
                         "dirs", (Py_ssize_t)self->nentries,
                         "kept_dirs", (unsigned long long)__atomic_load_n(&self->kept_dirs, __ATOMIC_RELAXED));
}

static PyObject *Core_get_last(Core *self, void *closure) {
    pthread_mutex_lock(&self->spool_lock);
    uint64_t last = self->last;
    pthread_mutex_unlock(&self->spool_lock);
    return PyLong_FromUnsignedLongLong(last);
}

static PyObject *Core_set_enabled(Core *self, PyObject *args) {
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) return NULL;
    self->enabled = on;
    Py_RETURN_NONE;
}

/* glob_match(pattern: bytes, name: bytes) -> bool: the segment matcher, for the differential test. */
static PyObject *mod_glob_match(PyObject *mod, PyObject *args) {
    const char *p, *s;
    if (!PyArg_ParseTuple(args, "yy", &p, &s)) return NULL;
    return PyBool_FromLong(glob_match(p, s));
}

static PyMethodDef Core_methods[] = {
    {"attach_spool", (PyCFunction)Core_attach_spool, METH_VARARGS, "attach_spool(fd, last): the session's spool"},
    {"detach_spool", (PyCFunction)Core_detach_spool, METH_NOARGS, "stop appending (the spool is closing)"},
    {"append", (PyCFunction)Core_append, METH_VARARGS, "append(head) -> n: one record, one write(2)"},
    {"set_flow", (PyCFunction)Core_set_flow, METH_VARARGS, "set_flow(acked, window, stopped)"},
    {"set_wake", (PyCFunction)Core_set_wake, METH_VARARGS, "set_wake(eventfd)"},
    {"set_globs", (PyCFunction)Core_set_globs, METH_VARARGS, "set_globs([bytes]); clears the table"},
    {"add", (PyCFunction)Core_add, METH_VARARGS, "add(op, dev, ino, dir, parts, inherit=0) -> bool"},
    {"clear", (PyCFunction)Core_clear, METH_NOARGS, "forget every directory"},
    {"next", (PyCFunction)Core_next, METH_VARARGS, "next(timeout_ms) -> bytes | None | False"},
    {"stop", (PyCFunction)Core_stop, METH_NOARGS, "stop and join the receivers (before the listener closes)"},
    {"counts", (PyCFunction)Core_counts, METH_NOARGS, "what the fast path did"},
    {"set_enabled", (PyCFunction)Core_set_enabled, METH_VARARGS, "switch the fast path on or off"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Core_getset[] = {
    {"last", (getter)Core_get_last, NULL, "the last record number appended", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "guard._core.Core",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The supervisor's compiled fast path and the session spool's writer.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Core_init,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_methods = Core_methods,
    .tp_getset = Core_getset,
};


/* ---- the walk for protected symlinks (guard.sandbox.link_names) ----------------------------------- */

/* walk_links(root, pruned, max_entries, clock_id, deadline) -> (links, entries, stop)
 *
 * The same walk as link_names._walk_links, entry for entry: depth first in directory order from `root`,
 * symlinks never followed, the kind from d_type (lstat only when the file system does not say), an
 * unreadable directory or entry skipped, a subdirectory whose path is in `pruned` not entered. After each
 * directory: stop (1) once max_entries entries were looked at, or (2) once `clock_id` reads past
 * `deadline`. Paths are joined as os.path.join joins them. Why here: run beside the agent's start, the
 * walk holds no GIL, so it takes the other core instead of the launch's. */
typedef struct { char **v; size_t n, cap; } StrVec;

static int vec_push(StrVec *vec, char *s) {
    if (vec->n == vec->cap) {
        size_t cap = vec->cap ? vec->cap * 2 : 64;
        char **v = realloc(vec->v, cap * sizeof *v);
        if (!v) { free(s); return -1; }
        vec->v = v; vec->cap = cap;
    }
    vec->v[vec->n++] = s;
    return 0;
}

static void vec_free(StrVec *vec) {
    for (size_t i = 0; i < vec->n; i++) free(vec->v[i]);
    free(vec->v);
}

static char *join_path(const char *dir, const char *name) {
    size_t dl = strlen(dir), nl = strlen(name);
    int slash = dl > 0 && dir[dl - 1] != '/';
    char *out = malloc(dl + slash + nl + 1);
    if (!out) return NULL;
    memcpy(out, dir, dl);
    if (slash) out[dl] = '/';
    memcpy(out + dl + slash, name, nl + 1);
    return out;
}

static double clock_read(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One directory's entries in directory order, as getdents64 gives them (names and d_type kinds; "." and
 * ".." left out), for both walks below. No GIL, no Python. -> 0 listed; an errno (the listing is then
 * empty: a directory that fails part way is unreadable whole, as os.scandir's error makes it); -1 out of
 * memory. `head`: an entry is named HEAD. */
typedef struct { char **names; unsigned char *types; size_t n; int head; } Listing;

static void listing_free(Listing *l) {
    for (size_t i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    free(l->types);
    memset(l, 0, sizeof *l);
}

static int list_entries(int fd, Listing *l) {
    struct linux_dirent64 { uint64_t ino; int64_t off; unsigned short reclen; unsigned char type; char name[]; };
    char buf[16384] __attribute__((aligned(8)));
    size_t cap = 0;
    memset(l, 0, sizeof *l);
    for (;;) {
        long got = syscall(SYS_getdents64, fd, buf, sizeof buf);
        if (got < 0) { int err = errno; listing_free(l); return err ? err : EIO; }
        if (got == 0) return 0;
        for (long at = 0; at < got;) {
            const struct linux_dirent64 *e = (const struct linux_dirent64 *)(buf + at);
            at += e->reclen;
            const char *name = e->name;
            if (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2]))) continue;
            if (l->n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                char **nn = realloc(l->names, ncap * sizeof *nn);
                if (nn) l->names = nn;
                unsigned char *nt = nn ? realloc(l->types, ncap) : NULL;
                if (nt) l->types = nt;
                if (!nn || !nt) { listing_free(l); return -1; }
                cap = ncap;
            }
            if (!(l->names[l->n] = strdup(name))) { listing_free(l); return -1; }
            l->types[l->n++] = e->type;
            l->head |= strcmp(name, "HEAD") == 0;
        }
    }
}

/* -> 0 walked, 1 entry bound, 2 time bound, -1 out of memory */
static int walk_links_c(const char *root, char **pruned, size_t npruned, long max_entries, clockid_t clock_id,
                        double deadline, StrVec *links, long *entries) {
    StrVec stack = {0}, subdirs = {0};
    long budget = max_entries;
    int rc = 0;
    char *first = strdup(root);
    if (!first || vec_push(&stack, first) < 0) { vec_free(&stack); return -1; }
    while (stack.n) {
        char *top = stack.v[--stack.n];
        int fd = open(top, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        Listing l;
        int listed = fd < 0 ? errno : list_entries(fd, &l);
        if (listed != 0) { /* unreadable: skipped, as os.walk skips it */
            if (fd >= 0) close(fd);
            free(top);
            if (listed < 0) { rc = -1; break; }
            continue;
        }
        subdirs.n = 0;
        for (size_t i = 0; i < l.n && rc == 0; i++) {
            const char *name = l.names[i];
            unsigned char type = l.types[i];
            if (type == DT_UNKNOWN) { /* the file system does not say: ask, as os.DirEntry does */
                struct stat st;
                if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
                type = S_ISLNK(st.st_mode) ? DT_LNK : S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
            }
            if (type != DT_LNK && type != DT_DIR) continue;
            char *path = join_path(top, name);
            if (!path) { rc = -1; break; }
            if (type == DT_LNK) {
                if (vec_push(links, path) < 0) rc = -1;
                continue;
            }
            int skip = 0;
            for (size_t k = 0; k < npruned && !skip; k++) skip = strcmp(path, pruned[k]) == 0;
            if (skip) { free(path); continue; }
            if (vec_push(&subdirs, path) < 0) rc = -1;
        }
        close(fd);
        free(top);
        *entries += (long)l.n;
        budget -= (long)l.n;
        listing_free(&l);
        /* the first subdirectory is walked next: push them in reverse */
        for (size_t i = subdirs.n; i > 0 && rc == 0; i--) {
            if (vec_push(&stack, subdirs.v[i - 1]) < 0) rc = -1;
            subdirs.v[i - 1] = NULL;
        }
        for (size_t i = 0; i < subdirs.n; i++) free(subdirs.v[i]);
        subdirs.n = 0;
        if (rc) break;
        if (clock_read(clock_id) > deadline) { rc = 2; break; }
        if (budget <= 0) { rc = 1; break; }
    }
    vec_free(&stack);
    vec_free(&subdirs);
    return rc;
}

static PyObject *mod_walk_links(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *root_bytes = NULL, *pruned_arg;
    long max_entries;
    int clock_id;
    double deadline;
    if (!PyArg_ParseTuple(args, "O&Olid", PyUnicode_FSConverter, &root_bytes, &pruned_arg, &max_entries,
                          &clock_id, &deadline))
        return NULL;
    if (clock_id != CLOCK_MONOTONIC && clock_id != CLOCK_THREAD_CPUTIME_ID) {
        Py_DECREF(root_bytes);
        PyErr_SetString(PyExc_ValueError, "walk_links: the clock is CLOCK_MONOTONIC or CLOCK_THREAD_CPUTIME_ID");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(pruned_arg, "walk_links: pruned must be a sequence of str");
    if (!seq) { Py_DECREF(root_bytes); return NULL; }
    Py_ssize_t np = PySequence_Fast_GET_SIZE(seq);
    char **pruned = calloc((size_t)np + 1, sizeof *pruned);
    char *root = strdup(PyBytes_AS_STRING(root_bytes));
    Py_DECREF(root_bytes);
    int ok = pruned != NULL && root != NULL;
    for (Py_ssize_t i = 0; ok && i < np; i++) {
        PyObject *encoded = PyUnicode_EncodeFSDefault(PySequence_Fast_GET_ITEM(seq, i));
        ok = encoded != NULL && (pruned[i] = strdup(PyBytes_AS_STRING(encoded))) != NULL;
        Py_XDECREF(encoded);
    }
    Py_DECREF(seq);
    StrVec links = {0};
    long entries = 0;
    int rc = -1;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        rc = walk_links_c(root, pruned, (size_t)np, max_entries, (clockid_t)clock_id, deadline, &links, &entries);
        Py_END_ALLOW_THREADS
    }
    if (pruned) for (Py_ssize_t i = 0; i < np; i++) free(pruned[i]);
    free(pruned);
    free(root);
    PyObject *out = NULL;
    if (rc < 0) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
    } else {
        PyObject *list = PyList_New((Py_ssize_t)links.n);
        for (size_t i = 0; list && i < links.n; i++) {
            PyObject *text = PyUnicode_DecodeFSDefault(links.v[i]);
            if (!text) { Py_CLEAR(list); break; }
            PyList_SET_ITEM(list, (Py_ssize_t)i, text);
        }
        if (list) out = Py_BuildValue("(Nli)", list, entries, rc);
    }
    vec_free(&links);
    return out;
}


/* ---- the launch scan's workspace walk (guard.sandbox.scan._glob_walk) ------------------------------ */

/* A small set of byte strings (names, paths): open addressing, FNV-1a. */
typedef struct { char **slot; size_t cap; } NameSet;

static uint64_t fnv(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) { h ^= (unsigned char)*s; h *= 1099511628211ULL; }
    return h;
}

static int nameset_fill(NameSet *set, PyObject *items) {
    PyObject *seq = PySequence_Fast(items, "glob_walk: expected a sequence of str");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    set->cap = 8;
    while (set->cap < (size_t)n * 2 + 2) set->cap *= 2;
    set->slot = calloc(set->cap, sizeof *set->slot);
    if (!set->slot) { Py_DECREF(seq); PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyUnicode_EncodeFSDefault(PySequence_Fast_GET_ITEM(seq, i));
        if (!b) { Py_DECREF(seq); return -1; }
        const char *text = PyBytes_AS_STRING(b);
        size_t at = fnv(text) & (set->cap - 1);
        while (set->slot[at] && strcmp(set->slot[at], text) != 0) at = (at + 1) & (set->cap - 1);
        if (!set->slot[at] && !(set->slot[at] = strdup(text))) { Py_DECREF(b); Py_DECREF(seq); PyErr_NoMemory(); return -1; }
        Py_DECREF(b);
    }
    Py_DECREF(seq);
    return 0;
}

static int nameset_has(const NameSet *set, const char *text) {
    if (!set->cap) return 0;
    size_t at = fnv(text) & (set->cap - 1);
    while (set->slot[at]) {
        if (strcmp(set->slot[at], text) == 0) return 1;
        at = (at + 1) & (set->cap - 1);
    }
    return 0;
}

static void nameset_free(NameSet *set) {
    for (size_t i = 0; i < set->cap; i++) free(set->slot[i]);
    free(set->slot);
}

/* One directory being walked: its entries as listed (names, kinds), and the next to look at. */
typedef struct {
    char *path;
    const char *parent; /* the directory's own name: what `parent` means for its entries */
    int parent_listed;  /* that name is in by_parent: every entry is a candidate */
    int fd;             /* kept open while its entries are walked: subdirectories are opened from it */
    Listing list;
    size_t next;
} Frame;

static void frame_free(Frame *f) {
    if (f->fd >= 0) close(f->fd);
    listing_free(&f->list);
    free(f->path);
}

/* "path: reason", as scan notes what it could not read (f"{path}: {exc.strerror}") */
static int note_unreadable(PyObject *list, const char *path, int err) {
    PyObject *where = PyUnicode_DecodeFSDefault(path);
    if (!where) return -1;
    PyObject *text = PyUnicode_FromFormat("%U: %s", where, strerror(err));
    Py_DECREF(where);
    if (!text) return -1;
    int rc = PyList_Append(list, text);
    Py_DECREF(text);
    return rc;
}

/* List `path` into `f` (entries in directory order); 1 listed, 0 unreadable (noted), -1 error set. */
/* Directories kept open at most this deep (each holds a descriptor); deeper ones are opened by path. */
#define KEEP_OPEN_DEPTH 48

static int frame_list(Frame *f, char *path, const Frame *above, size_t depth, PyObject *unreadable,
                      PyObject *head_dirs) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->path = path;
    const char *slash = strrchr(path, '/');
    f->parent = slash ? slash + 1 : path;
    /* from the directory above, by name (no lookup of the whole path again, no symlink followed), or by
     * path at the top and past KEEP_OPEN_DEPTH; the system calls without the GIL, as os.scandir makes
     * them, so the launch's other threads (the session's opening) go on */
    PyThreadState *gil = PyEval_SaveThread();
    int fd = above && above->fd >= 0 ? openat(above->fd, f->parent, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                                     : open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int listed = fd < 0 ? errno : list_entries(fd, &f->list);
    if (fd >= 0 && listed == 0 && depth < KEEP_OPEN_DEPTH) f->fd = fd;
    else if (fd >= 0) close(fd);
    PyEval_RestoreThread(gil);
    if (listed < 0) { PyErr_NoMemory(); return -1; }
    if (listed > 0) return note_unreadable(unreadable, path, listed) < 0 ? -1 : 0;
    if (f->list.head && head_dirs != Py_None) {
        PyObject *text = PyUnicode_DecodeFSDefault(path);
        if (!text || PyList_Append(head_dirs, text) < 0) { Py_XDECREF(text); return -1; }
        Py_DECREF(text);
    }
    return 1;
}

/* glob_walk(root, by_name, by_parent, starts, prune, budget, candidate, unreadable, head_dirs)
 *     -> (entries, capped)
 *
 * scan._glob_walk's walk, entry for entry, with its cheap test in C: an entry goes to
 * `candidate(path, name, parent, kind) -> bool` (which decides, and says True to keep the walk out of a
 * matched directory) only when its name is in `by_name`, its directory's name in `by_parent`, or its name
 * starts with one of `starts`; every other entry costs no Python at all. Depth first in directory order,
 * each directory listed whole before its entries are looked at, symlinks never followed, kinds from
 * d_type; a directory in `prune` is not entered; what cannot be read is noted in the list `unreadable`, and
 * a directory holding a `HEAD` in the list `head_dirs` (None: not looked for), in walk order. Stops,
 * capped, when more than `budget` entries would be looked at. */
static PyObject *mod_glob_walk(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *root_bytes = NULL, *by_name_arg, *by_parent_arg, *starts_arg, *prune_arg, *candidate;
    PyObject *unreadable, *head_dirs;
    long budget;
    if (!PyArg_ParseTuple(args, "O&OOOOlOO!O", PyUnicode_FSConverter, &root_bytes, &by_name_arg,
                          &by_parent_arg, &starts_arg, &prune_arg, &budget, &candidate, &PyList_Type,
                          &unreadable, &head_dirs))
        return NULL;
    if (head_dirs != Py_None && !PyList_Check(head_dirs)) {
        Py_DECREF(root_bytes);
        PyErr_SetString(PyExc_TypeError, "glob_walk: head_dirs must be a list or None");
        return NULL;
    }
    NameSet by_name = {0}, by_parent = {0}, prune = {0};
    char **starts = NULL;
    size_t *start_len = NULL;
    Py_ssize_t nstarts = 0;
    Frame *stack = NULL;
    size_t depth = 0, stack_cap = 0;
    long used = 0;
    int capped = 0, failed = 1;
    PyObject *out = NULL;
    if (nameset_fill(&by_name, by_name_arg) < 0 || nameset_fill(&by_parent, by_parent_arg) < 0
        || nameset_fill(&prune, prune_arg) < 0) goto done;
    PyObject *seq = PySequence_Fast(starts_arg, "glob_walk: starts must be a sequence of str");
    if (!seq) goto done;
    nstarts = PySequence_Fast_GET_SIZE(seq);
    starts = calloc((size_t)nstarts + 1, sizeof *starts);
    for (Py_ssize_t i = 0; starts && i < nstarts; i++) {
        PyObject *b = PyUnicode_EncodeFSDefault(PySequence_Fast_GET_ITEM(seq, i));
        if (!b) break;
        starts[i] = strdup(PyBytes_AS_STRING(b));
        Py_DECREF(b);
        if (!starts[i]) break;
    }
    Py_DECREF(seq);
    if (!starts) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < nstarts; i++) if (!starts[i]) { if (!PyErr_Occurred()) PyErr_NoMemory(); goto done; }
    start_len = calloc((size_t)nstarts + 1, sizeof *start_len);
    if (!start_len) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < nstarts; i++) start_len[i] = strlen(starts[i]);

    stack_cap = 32;
    stack = calloc(stack_cap, sizeof *stack);
    char *first = strdup(PyBytes_AS_STRING(root_bytes));
    if (!stack || !first) { free(first); PyErr_NoMemory(); goto done; }
    int listed = frame_list(&stack[0], first, NULL, 0, unreadable, head_dirs);
    if (listed < 0) { frame_free(&stack[0]); goto done; }
    stack[0].parent_listed = nameset_has(&by_parent, stack[0].parent);
    depth = 1;
    while (depth) {
        Frame *top = &stack[depth - 1];
        if (top->next == top->list.n) { frame_free(top); depth--; continue; }
        size_t i = top->next++;
        if (++used > budget) { capped = 1; break; }
        const char *name = top->list.names[i];
        unsigned char type = top->list.types[i];
        int maybe = top->parent_listed || nameset_has(&by_name, name);
        for (Py_ssize_t s = 0; !maybe && s < nstarts; s++) maybe = strncmp(name, starts[s], start_len[s]) == 0;
        if (!maybe && type != DT_DIR && type != DT_UNKNOWN) continue; /* the common case: no path, no Python */
        char *path = join_path(top->path, name);
        if (!path) { PyErr_NoMemory(); goto done; }
        if (type == DT_UNKNOWN) { /* the file system does not say: lstat, as os.DirEntry does */
            struct stat st;
            if (lstat(path, &st) < 0) {
                int rc = note_unreadable(unreadable, path, errno);
                free(path);
                if (rc < 0) goto done;
                continue;
            }
            type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
        }
        int is_dir = type == DT_DIR;
        if (maybe) {
            const char *kind = is_dir ? "dir" : type == DT_REG ? "file" : "other";
            PyObject *res = PyObject_CallFunction(candidate, "O&O&O&s", PyUnicode_DecodeFSDefault, path,
                                                  PyUnicode_DecodeFSDefault, name,
                                                  PyUnicode_DecodeFSDefault, top->parent, kind);
            if (!res) { free(path); goto done; }
            int stop = PyObject_IsTrue(res);
            Py_DECREF(res);
            if (stop < 0) { free(path); goto done; }
            if (stop) { free(path); continue; }
            top = &stack[depth - 1]; /* the callback ran Python: nothing of ours moved, but re-read */
        }
        if (!is_dir || nameset_has(&prune, path)) { free(path); continue; }
        if (depth == stack_cap) {
            Frame *grown = realloc(stack, stack_cap * 2 * sizeof *stack);
            if (!grown) { free(path); PyErr_NoMemory(); goto done; }
            stack = grown;
            stack_cap *= 2;
        }
        listed = frame_list(&stack[depth], path, &stack[depth - 1], depth, unreadable, head_dirs);
        if (listed < 0) { frame_free(&stack[depth]); goto done; }
        stack[depth].parent_listed = nameset_has(&by_parent, stack[depth].parent);
        depth++;
    }
    failed = 0;
done:
    while (depth) frame_free(&stack[--depth]);
    free(stack);
    if (starts) for (Py_ssize_t i = 0; i < nstarts; i++) free(starts[i]);
    free(starts);
    free(start_len);
    nameset_free(&by_name);
    nameset_free(&by_parent);
    nameset_free(&prune);
    Py_DECREF(root_bytes);
    if (!failed) out = Py_BuildValue("(lO)", used, capped ? Py_True : Py_False);
    return out;
}

/* read_task(pid, addr, size) -> bytes
 * Up to `size` bytes of the task's memory at `addr`, stopping at the first page it cannot read: what the
 * Python supervisor's _Task.read returns by pread of /proc/<pid>/mem, page by page, in one
 * process_vm_readv (one iovec a page, so a partial read stops at a page as the kernel's own copy from the
 * task would) instead of an open, a pread a page and a close. Why: a decision made in Python reads its
 * path (and an exec its argv) first, three system calls each letting another thread take the
 * interpreter's lock; this is one. The lock is let go for it: a page may be slow to fault in.
 * b"" when not even the first byte can be read; raises ProcessLookupError when the task is gone and
 * OSError for any other refusal (EPERM). */
#define READ_TASK_MAX (1 << 20)
static PyObject *mod_read_task(PyObject *self, PyObject *args) {
    int pid;
    unsigned long long addr;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "iKn", &pid, &addr, &size)) return NULL;
    if (pid <= 0 || size < 0 || size > READ_TASK_MAX) {
        PyErr_SetString(PyExc_ValueError, "read_task: pid > 0 and 0 <= size <= 1 MiB");
        return NULL;
    }
    if (size == 0 || addr == 0) return PyBytes_FromStringAndSize(NULL, 0);
    if (addr > UINT64_MAX - (unsigned long long)size) size = (Py_ssize_t)(UINT64_MAX - addr);
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (!out) return NULL;
    char *buf = PyBytes_AS_STRING(out);
    enum { PAGES = 64 };
    struct iovec remote[PAGES];
    size_t have = 0;
    while (have < (size_t)size) {
        int n = 0;
        size_t batch = 0;
        while (n < PAGES && have + batch < (size_t)size) {
            uint64_t at = addr + have + batch;
            size_t want = 4096 - (size_t)(at % 4096);
            if (want > (size_t)size - have - batch) want = (size_t)size - have - batch;
            remote[n].iov_base = (void *)(uintptr_t)at;
            remote[n].iov_len = want;
            batch += want;
            n++;
        }
        struct iovec local = {buf + have, batch};
        ssize_t got;
        int err;
        /* without the interpreter's lock: a page of the task's may be slow to fault in (a hung network
         * mount, a userfaultfd), and every other thread of guard run must go on meanwhile */
        Py_BEGIN_ALLOW_THREADS
        got = process_vm_readv((pid_t)pid, &local, 1, remote, (unsigned long)n, 0);
        err = errno;
        Py_END_ALLOW_THREADS
        errno = err;
        if (got < 0) {
            if (errno == EFAULT) break; /* the first page of this batch cannot be read */
            Py_DECREF(out);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        have += (size_t)got;
        if ((size_t)got < batch) break; /* stopped at a page it cannot read */
    }
    if (have < (size_t)size && _PyBytes_Resize(&out, (Py_ssize_t)have) < 0) return NULL;
    return out;
}

static PyMethodDef module_methods[] = {
    {"glob_match", mod_glob_match, METH_VARARGS, "glob_match(pattern, name) -> bool"},
    {"read_task", mod_read_task, METH_VARARGS, "read_task(pid, addr, size) -> bytes (up to the first unreadable page)"},
    {"walk_links", mod_walk_links, METH_VARARGS,
     "walk_links(root, pruned, max_entries, clock_id, deadline) -> (links, entries, stop)"},
    {"glob_walk", mod_glob_walk, METH_VARARGS,
     "glob_walk(root, by_name, by_parent, starts, prune, budget, candidate, unreadable, head_dirs) -> (entries, capped)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "guard._core", NULL, -1, module_methods};

PyMODINIT_FUNC PyInit__core(void) {
    if (PyType_Ready(&CoreType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&CoreType);
    PyModule_AddObject(m, "Core", (PyObject *)&CoreType);
    PyModule_AddIntConstant(m, "OP_WRITE", OP_WRITE);
    PyModule_AddIntConstant(m, "OP_READ", OP_READ);
    return m;
}
