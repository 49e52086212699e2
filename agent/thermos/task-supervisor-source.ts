/**
 * The C source of the task supervisor (see task-supervisor.ts), kept here so every way of running the
 * agent (tsx, dist, the bundle, the Nix package) has it; the agent compiles it once per version.
 */

/** The source; the binary's name carries its hash, so a changed source is compiled afresh. */
export const TASK_SUPERVISOR_C = String.raw`/*
 * mxc task supervisor: one per task, started inside the task's PID namespace (and sandbox), so each
 * process start is a fork + exec here instead of a new namespace per process. It speaks the frame
 * protocol of task-supervisor.ts on stdin (commands) and stdout (events); see that file for the
 * frames. It exits, killing every process left in its namespace, when its stdin closes.
 * Built by the agent with 'cc -O2 -static' (static: a sandbox shows no host libc).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_RUNS 256
#define MAX_FRAME (8u << 20)
#define CHUNK 65536

struct run {
  uint32_t id;
  pid_t pid;      /* group leader (pid in this namespace); 0 when the slot is free */
  int out, err;   /* read ends of the run's stdout/stderr, -1 once at EOF */
  int exited;     /* the leader was reaped */
  int lingering;  /* the leader exited leaving group members: 'G' is owed */
};

static struct run runs[MAX_RUNS];
static unsigned char inbuf[MAX_FRAME + 5];
static size_t inlen;

static void die(const char *what) {
  fprintf(stderr, "mxc-task-supervisor: %s: %s\n", what, strerror(errno));
  exit(70);
}

static void put32(unsigned char *p, uint32_t v) {
  p[0] = v & 0xff, p[1] = (v >> 8) & 0xff, p[2] = (v >> 16) & 0xff, p[3] = (v >> 24) & 0xff;
}

static uint32_t get32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void write_all(const unsigned char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(1, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      exit(errno == EPIPE ? 0 : 71); /* the agent is gone */
    }
    p += w, n -= (size_t)w;
  }
}

/* One event frame: u32 length of what follows, u8 kind, u32 id, u32 a, then 'data'. */
static void emit(char kind, uint32_t id, uint32_t a, const void *data, size_t len) {
  unsigned char head[13];
  put32(head, (uint32_t)(9 + len));
  head[4] = (unsigned char)kind;
  put32(head + 5, id);
  put32(head + 9, a);
  if (len == 0) {
    write_all(head, sizeof head);
    return;
  }
  unsigned char *buf = malloc(sizeof head + len);
  if (!buf) die("malloc");
  memcpy(buf, head, sizeof head);
  memcpy(buf + sizeof head, data, len);
  write_all(buf, sizeof head + len);
  free(buf);
}

static struct run *find(uint32_t id) {
  for (int i = 0; i < MAX_RUNS; i++)
    if (runs[i].pid && runs[i].id == id) return &runs[i];
  return NULL;
}

/* The run is over and its output complete: 'C', and its slot is free again. */
static void release_if_done(struct run *r) {
  if (!r->exited || r->lingering || r->out >= 0 || r->err >= 0) return;
  emit('C', r->id, 0, NULL, 0);
  memset(r, 0, sizeof *r);
}

/* Forwards what one pipe holds now (at most 'reads' chunks; 0: all of it); closes it at EOF. */
static void pump(struct run *r, int *fd, char kind, int reads) {
  static unsigned char buf[CHUNK];
  for (int i = 0; reads == 0 || i < reads; i++) {
    ssize_t n = read(*fd, buf, sizeof buf);
    if (n > 0) {
      emit(kind, r->id, 0, buf, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    close(*fd);
    *fd = -1;
    return;
  }
}

static void spawn_run(const unsigned char *p, size_t len) {
  if (len < 12) return;
  uint32_t id = get32(p), argc = get32(p + 4), envc = get32(p + 8);
  const char *s = (const char *)p + 12, *end = (const char *)p + len;
  if (argc == 0 || argc > 65536 || envc > 65536) {
    emit('F', id, EINVAL, "bad spawn frame", 15);
    return;
  }
  char **argv = calloc(argc + 1, sizeof *argv), **envp = calloc(envc + 1, sizeof *envp);
  const char *cwd = NULL;
  if (!argv || !envp) die("calloc");
  for (uint32_t i = 0; i < 1 + argc + envc; i++) {
    const char *z = memchr(s, 0, (size_t)(end - s));
    if (!z) {
      emit('F', id, EINVAL, "bad spawn frame", 15);
      free(argv), free(envp);
      return;
    }
    if (i == 0) cwd = s;
    else if (i <= argc) argv[i - 1] = (char *)s;
    else envp[i - 1 - argc] = (char *)s;
    s = z + 1;
  }
  struct run *r = NULL;
  for (int i = 0; i < MAX_RUNS && !r; i++)
    if (!runs[i].pid) r = &runs[i];
  int out[2], err[2], status[2];
  if (!r) {
    emit('F', id, EAGAIN, "too many runs in this task", 26);
  } else if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) || pipe2(status, O_CLOEXEC)) {
    emit('F', id, (uint32_t)errno, "pipe", 4);
  } else {
    pid_t pid = fork();
    if (pid == 0) {
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, NULL);
      signal(SIGPIPE, SIG_DFL);
      int null = open("/dev/null", O_RDONLY);
      int e = 0;
      if (setsid() < 0 || null < 0 || dup2(null, 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0)
        e = errno;
      else if (chdir(cwd) < 0)
        e = errno;
      else {
        execve(argv[0], argv, envp);
        e = errno;
      }
      ssize_t ignored = write(status[1], &e, sizeof e);
      (void)ignored;
      _exit(127);
    }
    close(out[1]), close(err[1]), close(status[1]);
    int e = 0;
    ssize_t n;
    do n = read(status[0], &e, sizeof e);
    while (n < 0 && errno == EINTR);
    close(status[0]);
    if (pid < 0 || n > 0) {
      /* Never ran: the child (if any) is reaped by the SIGCHLD loop as an unknown pid. */
      int code = pid < 0 ? errno : e;
      const char *msg = strerror(code);
      emit('F', id, (uint32_t)code, msg, strlen(msg));
      close(out[0]), close(err[0]);
    } else {
      fcntl(out[0], F_SETFL, O_NONBLOCK);
      fcntl(err[0], F_SETFL, O_NONBLOCK);
      *r = (struct run){.id = id, .pid = pid, .out = out[0], .err = err[0]};
      emit('P', id, (uint32_t)pid, NULL, 0);
    }
  }
  free(argv), free(envp);
}

static void signal_run(const unsigned char *p, size_t len) {
  if (len < 8) return;
  struct run *r = find(get32(p));
  int sig = (int)get32(p + 4);
  if (r && (sig == SIGTERM || sig == SIGKILL)) kill(-r->pid, sig);
}

static void reap(void) {
  for (;;) {
    int st;
    pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid <= 0) return;
    for (int i = 0; i < MAX_RUNS; i++) {
      struct run *r = &runs[i];
      if (r->pid != pid || r->exited) continue;
      /* What the leader wrote before exiting is in its pipes now: it goes out before the exit. */
      if (r->out >= 0) pump(r, &r->out, 'O', 0);
      if (r->err >= 0) pump(r, &r->err, 'E', 0);
      r->exited = 1;
      r->lingering = kill(-pid, 0) == 0;
      emit('X', r->id, (uint32_t)st, r->lingering ? "L" : "", r->lingering ? 1 : 0);
      release_if_done(r);
    }
  }
}

/* Kills everything else in this PID namespace (all but its init and us) and exits with 'code'. */
static void end_namespace(int code) {
  kill(-1, SIGKILL);
  while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {
  }
  exit(code);
}

static void shutdown_namespace(void) { end_namespace(0); }

/* Moves this process into the cgroup directory 'p' (NUL-terminated), or ends the task. */
static void join_cgroup(const unsigned char *p, size_t len) {
  const char *dir = (const char *)p;
  char path[4096];
  if (len == 0 || p[len - 1] != 0 || dir[0] != '/' ||
      snprintf(path, sizeof path, "%s/cgroup.procs", dir) >= (int)sizeof path) {
    fprintf(stderr, "mxc-task-supervisor: bad cgroup frame\n");
    end_namespace(73);
  }
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0 || write(fd, "0", 1) != 1) {
    fprintf(stderr, "mxc-task-supervisor: cannot enter cgroup %s: %s\n", dir, strerror(errno));
    end_namespace(73);
  }
  close(fd);
}

static void read_commands(void) {
  ssize_t n = read(0, inbuf + inlen, sizeof inbuf - inlen);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n <= 0) shutdown_namespace();
  inlen += (size_t)n;
  size_t at = 0;
  while (inlen - at >= 5) {
    uint32_t len = get32(inbuf + at);
    if (len == 0 || len > MAX_FRAME) {
      fprintf(stderr, "mxc-task-supervisor: bad frame length %u\n", len);
      shutdown_namespace();
    }
    if (inlen - at < 4 + (size_t)len) break;
    unsigned char kind = inbuf[at + 4];
    if (kind == 'S') spawn_run(inbuf + at + 5, len - 1);
    else if (kind == 'K') signal_run(inbuf + at + 5, len - 1);
    else if (kind == 'J') join_cgroup(inbuf + at + 5, len - 1);
    at += 4 + len;
  }
  memmove(inbuf, inbuf + at, inlen - at);
  inlen -= at;
}

int main(int argc, char **argv) {
  /* kill(-1) at shutdown must only ever reach a namespace of our own: there we are its pid 1 or 2. */
  if (argc != 2 || strcmp(argv[1], "--in-new-pid-namespace") != 0 || getpid() > 2) {
    fprintf(stderr, "mxc-task-supervisor: must run as pid 1 or 2 of a new PID namespace (pid %d)\n",
            (int)getpid());
    return 64;
  }
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) die("signalfd");
  fcntl(0, F_SETFD, FD_CLOEXEC);
  fcntl(1, F_SETFD, FD_CLOEXEC);
  emit('R', 0, (uint32_t)getpid(), NULL, 0);
  struct pollfd fds[2 + 2 * MAX_RUNS];
  struct run *owner[2 + 2 * MAX_RUNS];
  for (;;) {
    int n = 0, lingering = 0;
    fds[n++] = (struct pollfd){.fd = 0, .events = POLLIN};
    fds[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
    for (int i = 0; i < MAX_RUNS; i++) {
      struct run *r = &runs[i];
      if (!r->pid) continue;
      lingering |= r->lingering;
      if (r->out >= 0) owner[n] = r, fds[n++] = (struct pollfd){.fd = r->out, .events = POLLIN};
      if (r->err >= 0) owner[n] = r, fds[n++] = (struct pollfd){.fd = r->err, .events = POLLIN};
    }
    /* Group members left behind by an exited leader are polled for (no event says they are gone). */
    if (poll(fds, (nfds_t)n, lingering ? 20 : -1) < 0 && errno != EINTR) die("poll");
    for (int i = 2; i < n; i++) {
      if (!fds[i].revents) continue;
      struct run *r = owner[i];
      if (fds[i].fd == r->out) pump(r, &r->out, 'O', 4);
      else if (fds[i].fd == r->err) pump(r, &r->err, 'E', 4);
      release_if_done(r);
    }
    if (fds[1].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) > 0) {
      }
      reap();
    }
    for (int i = 0; i < MAX_RUNS; i++) {
      struct run *r = &runs[i];
      if (r->pid && r->lingering && kill(-r->pid, 0) < 0 && errno == ESRCH) {
        r->lingering = 0;
        emit('G', r->id, 0, NULL, 0);
        release_if_done(r);
      }
    }
    if (fds[0].revents) read_commands();
  }
}
`;
