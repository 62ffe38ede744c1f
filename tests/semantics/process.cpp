// Processes: fork with inherited sockets, vfork + execve, the exec family (execl, execlp, execle,
// execv, execvp, execvpe, execve, fexecve, execveat), posix_spawn and posix_spawnp — exit statuses,
// errno of failing execs, sockets inherited across exec and closed by FD_CLOEXEC.
//
// `process --child MODE ...` is the helper this program re-executes itself as.
#include "check.hpp"

#include <spawn.h>

#include <string>
#include <vector>

extern char** environ;

using namespace sem;

namespace {

// ---------------------------------------------------------------- child helper modes

int child_main(int argc, char** argv) {
    std::string mode = argv[2];
    if (mode == "write-fd" && argc == 5) {  // write MSG on inherited fd, exit 20
        int fd = atoi(argv[3]);
        std::string msg = argv[4];
        return ::write(fd, msg.data(), msg.size()) == ssize_t(msg.size()) ? 20 : 1;
    }
    if (mode == "fd-state" && argc == 4) {  // 21 closed, 22 open socket, 23 open non-socket
        int fd = atoi(argv[3]);
        if (::fcntl(fd, F_GETFD) == -1) return errno == EBADF ? 21 : 1;
        int type = 0;
        socklen_t l = sizeof type;
        return ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) == 0 && type == SOCK_STREAM ? 22 : 23;
    }
    if (mode == "env" && argc == 4) {  // exit with the number in $NAME
        const char* v = getenv(argv[3]);
        return v ? atoi(v) : 99;
    }
    return 98;
}

// ---------------------------------------------------------------- waiting for children

std::string status_text(int st) {
    if (WIFEXITED(st)) return "exit " + std::to_string(WEXITSTATUS(st));
    if (WIFSIGNALED(st)) return std::string("signal ") + (sigabbrev_np(WTERMSIG(st)) ? sigabbrev_np(WTERMSIG(st)) : "?");
    return "status?";
}

// Reaps `pid` within kWaitMs (killing it after that).
std::string reap(pid_t pid) {
    if (pid < 0) return "no child: " + errname(errno);
    int64_t end = now_ms() + kWaitMs;
    int st = 0;
    for (;;) {
        pid_t r = ::waitpid(pid, &st, WNOHANG);
        if (r == pid) return status_text(st);
        if (r < 0 && errno != EINTR) return "waitpid " + errname(errno);
        if (now_ms() > end) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &st, 0);
            return "timeout";
        }
        backoff();
    }
}

std::string self_exe() {
    char b[4096];
    ssize_t n = ::readlink("/proc/self/exe", b, sizeof b - 1);
    return n > 0 ? std::string(b, size_t(n)) : "/proc/self/exe";
}

// argv/envp builder that owns its strings.
struct Argv {
    std::vector<std::string> s;
    std::vector<char*> p;
    Argv(std::initializer_list<std::string> l) : s(l) {
        for (auto& x : s) p.push_back(x.data());
        p.push_back(nullptr);
    }
    char* const* get() { return p.data(); }
};

// ---------------------------------------------------------------- fork

void test_fork() {
    int c, s;
    tcp_pair(c, s);
    fflush(stdout);
    pid_t pid = ::fork();
    if (pid == 0) {
        const char msg[] = "from-child";
        ssize_t n = ::write(c, msg, 10);
        _exit(n == 10 ? 17 : 1);
    }
    expect("fork returns a child pid", pid > 0, "pid > 0");
    expect_str("child wrote on the inherited socket", recv_exact(s, 10), "from-child");
    expect_str("fork child exit status", reap(pid), "exit 17");

    // Child echoes what the parent sends, upper-cased, through the inherited socket.
    fflush(stdout);
    pid = ::fork();
    if (pid == 0) {
        char b[16];
        ssize_t n = ::read(c, b, 5);
        if (n != 5) _exit(1);
        for (auto& ch : b) ch = char(toupper(ch));
        _exit(::write(c, b, 5) == 5 ? 0 : 2);
    }
    send_all(s, "hello", 5);
    expect_str("child echoes via the inherited socket", recv_exact(s, 5), "HELLO");
    expect_str("echo child exit status", reap(pid), "exit 0");

    // The child's close does not end the parent's connection.
    fflush(stdout);
    pid = ::fork();
    if (pid == 0) _exit(::close(c) == 0 ? 0 : 1);
    expect_str("child closes its copy", reap(pid), "exit 0");
    char b[8];
    expect_ret("peer sees no EOF after the child's close", SEM_CALL(::recv(s, b, sizeof b, MSG_DONTWAIT)), -1, EAGAIN);
    expect("parent's socket still works", send_all(c, "ok", 2) && recv_exact(s, 2) == "ok", "data through");

    // A child using the socket after the parent closed its copy.
    fflush(stdout);
    pid = ::fork();
    if (pid == 0) {
        char x[8];
        ssize_t n = ::recv(c, x, 3, MSG_WAITALL);
        _exit(n == 3 && memcmp(x, "par", 3) == 0 ? 30 : 1);
    }
    ::close(c);
    send_all(s, "par", 3);
    expect_str("child keeps the connection after the parent's close", reap(pid), "exit 30");
    expect_ret("peer EOF once the last copy is gone", SEM_CALL(::recv(s, b, sizeof b, 0)), 0);
    ::close(s);

    // A child accepting on an inherited listener.
    sockaddr_storage la;
    socklen_t ll;
    int l = listener(AF_INET, la, ll);
    fflush(stdout);
    pid = ::fork();
    if (pid == 0) {
        int a = ::accept(l, nullptr, nullptr);
        _exit(a >= 0 && ::write(a, "acc", 3) == 3 ? 31 : 1);
    }
    int cc = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    must(::connect(cc, reinterpret_cast<sockaddr*>(&la), ll), "connect");
    expect_str("child accepted on the inherited listener", recv_exact(cc, 3), "acc");
    expect_str("accepting child exit status", reap(pid), "exit 31");
    close_all({l, cc});

    fflush(stdout);
    pid = ::fork();
    if (pid == 0) {
        ::raise(SIGTERM);
        _exit(1);
    }
    expect_str("child killed by a signal", reap(pid), "signal TERM");
}

// ---------------------------------------------------------------- vfork

// Kept small and free of C++ objects: after vfork the child shares this stack frame.
pid_t vfork_exec(const char* path, char* const* argv, char* const* envp) {
    pid_t pid = ::vfork();
    if (pid == 0) {
        ::execve(path, argv, envp);
        _exit(127);
    }
    return pid;
}

pid_t vfork_exit(int code) {
    pid_t pid = ::vfork();
    if (pid == 0) _exit(code);
    return pid;
}

void test_vfork() {
    Argv t{"true"}, f{"false"}, n{"nope"};
    fflush(stdout);
    expect_str("vfork + execve /bin/true", reap(vfork_exec("/bin/true", t.get(), environ)), "exit 0");
    fflush(stdout);
    expect_str("vfork + execve /bin/false", reap(vfork_exec("/bin/false", f.get(), environ)), "exit 1");
    fflush(stdout);
    expect_str("vfork + execve of a missing file, _exit(127)", reap(vfork_exec("/nonexistent/sdx", n.get(), environ)), "exit 127");
    fflush(stdout);
    expect_str("vfork + _exit(5)", reap(vfork_exit(5)), "exit 5");

    // A socket inherited across vfork + execve of ourselves.
    int c, s;
    tcp_pair(c, s);
    std::string exe = self_exe();
    Argv w{exe, "--child", "write-fd", std::to_string(c), "vforked"};
    fflush(stdout);
    pid_t pid = vfork_exec(exe.c_str(), w.get(), environ);
    expect_str("vfork + execve child wrote on the inherited socket", recv_exact(s, 7), "vforked");
    expect_str("vfork + execve self status", reap(pid), "exit 20");
    close_all({c, s});
}

// ---------------------------------------------------------------- exec family

// Runs `exec` in a forked child (which _exits 127 when exec returns) and returns the status.
template <class F>
std::string in_child(F exec) {
    fflush(stdout);
    pid_t pid = ::fork();
    if (pid == 0) {
        exec();
        _exit(127);
    }
    return reap(pid);
}

void test_exec_family() {
    Argv env_ok{"SEM_CODE=5", "PATH=/usr/bin:/bin"};
    expect_str("execl /bin/sh exit 3", in_child([] { ::execl("/bin/sh", "sh", "-c", "exit 3", (char*)nullptr); }), "exit 3");
    expect_str("execlp sh exit 4", in_child([] { ::execlp("sh", "sh", "-c", "exit 4", (char*)nullptr); }), "exit 4");
    expect_str("execle with env SEM_CODE=5",
               in_child([&] { ::execle("/bin/sh", "sh", "-c", "exit $SEM_CODE", (char*)nullptr, env_ok.get()); }), "exit 5");
    Argv a6{"sh", "-c", "exit 6"}, a7{"sh", "-c", "exit 7"}, a8{"sh", "-c", "exit $SEM_CODE"};
    Argv e8{"SEM_CODE=8"}, e9{"SEM_CODE=9"}, e10{"SEM_CODE=10"}, e11{"SEM_CODE=11"}, e12{"SEM_CODE=12"}, e13{"SEM_CODE=13"};
    expect_str("execv /bin/sh exit 6", in_child([&] { ::execv("/bin/sh", a6.get()); }), "exit 6");
    expect_str("execvp sh exit 7", in_child([&] { ::execvp("sh", a7.get()); }), "exit 7");
    expect_str("execvpe sh with env SEM_CODE=8", in_child([&] { ::execvpe("sh", a8.get(), e8.get()); }), "exit 8");
    expect_str("execve /bin/sh with env SEM_CODE=9", in_child([&] { ::execve("/bin/sh", a8.get(), e9.get()); }), "exit 9");
    expect_str("fexecve /bin/sh with env SEM_CODE=10", in_child([&] {
                   int fd = ::open("/bin/sh", O_RDONLY | O_CLOEXEC);
                   ::fexecve(fd, a8.get(), e10.get());
               }),
               "exit 10");
    expect_str("execveat AT_FDCWD /bin/sh", in_child([&] { ::execveat(AT_FDCWD, "/bin/sh", a8.get(), e11.get(), 0); }), "exit 11");
    expect_str("execveat dirfd /bin + \"sh\"", in_child([&] {
                   int d = ::open("/bin", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                   ::execveat(d, "sh", a8.get(), e12.get(), 0);
               }),
               "exit 12");
    expect_str("execveat fd + \"\" AT_EMPTY_PATH", in_child([&] {
                   int fd = ::open("/bin/sh", O_RDONLY | O_CLOEXEC);
                   ::execveat(fd, "", a8.get(), e13.get(), AT_EMPTY_PATH);
               }),
               "exit 13");

    // Sockets across exec: inherited unless FD_CLOEXEC.
    std::string exe = self_exe();
    int c, s;
    tcp_pair(c, s);
    Argv w{exe, "--child", "write-fd", std::to_string(c), "exec-child"};
    expect_str("execv self: child status", in_child([&] { ::execv(exe.c_str(), w.get()); }), "exit 20");
    expect_str("execv self: child wrote on the inherited socket", recv_exact(s, 10), "exec-child");
    Argv st{exe, "--child", "fd-state", std::to_string(c)};
    expect_str("socket without FD_CLOEXEC is open after exec", in_child([&] { ::execv(exe.c_str(), st.get()); }), "exit 22");
    must(::fcntl(c, F_SETFD, FD_CLOEXEC), "F_SETFD");
    expect_str("socket with FD_CLOEXEC is closed by exec", in_child([&] { ::execv(exe.c_str(), st.get()); }), "exit 21");
    int cl = int(must(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), "socket"));
    Argv st2{exe, "--child", "fd-state", std::to_string(cl)};
    expect_str("SOCK_CLOEXEC socket is closed by exec", in_child([&] { ::execv(exe.c_str(), st2.get()); }), "exit 21");
    Argv ev{exe, "--child", "env", "SEM_X"}, evenv{"SEM_X=42"};
    expect_str("execve self with an explicit environment", in_child([&] { ::execve(exe.c_str(), ev.get(), evenv.get()); }), "exit 42");
    close_all({c, s, cl});

    // Failing execs return -1 with errno, in this process.
    Argv any{"x"};
    expect_ret("execve missing file", SEM_CALL(::execve("/nonexistent/sdx", any.get(), environ)), -1, ENOENT);
    expect_ret("execve a directory", SEM_CALL(::execve("/tmp", any.get(), environ)), -1, EACCES);
    expect_ret("execv a non-executable file", SEM_CALL(::execv("/etc/passwd", any.get())), -1, EACCES);
    expect_ret("execvp unknown command", SEM_CALL(::execvp("sdx-no-such-command", any.get())), -1, ENOENT);
    expect_ret("execvpe unknown command", SEM_CALL(::execvpe("sdx-no-such-command", any.get(), environ)), -1, ENOENT);
    expect_ret("execl missing file", SEM_CALL(::execl("/nonexistent/sdx", "x", (char*)nullptr)), -1, ENOENT);
    expect_ret("execlp unknown command", SEM_CALL(::execlp("sdx-no-such-command", "x", (char*)nullptr)), -1, ENOENT);
    expect_ret("execle missing file", SEM_CALL(::execle("/nonexistent/sdx", "x", (char*)nullptr, environ)), -1, ENOENT);
    expect_ret("fexecve(-1)", SEM_CALL(::fexecve(-1, any.get(), environ)), -1, EINVAL);
    int nf = int(must(::open("/etc/passwd", O_RDONLY | O_CLOEXEC), "open"));
    expect_ret("fexecve of a non-executable file", SEM_CALL(::fexecve(nf, any.get(), environ)), -1, EACCES);
    ::close(nf);
    expect_ret("execveat empty path without AT_EMPTY_PATH", SEM_CALL(::execveat(AT_FDCWD, "", any.get(), environ, 0)), -1, ENOENT);
    expect_ret("execveat bad flags", SEM_CALL(::execveat(AT_FDCWD, "/bin/true", any.get(), environ, 0x1)), -1, EINVAL);
    expect_ret("execveat bad dirfd", SEM_CALL(::execveat(900, "sh", any.get(), environ, 0)), -1, EBADF);
}

// ---------------------------------------------------------------- posix_spawn

std::string spawn_status(int rc, pid_t pid) { return rc != 0 ? "spawn error " + errname(rc) : reap(pid); }

void test_spawn() {
    Argv a13{"sh", "-c", "exit 13"}, a14{"sh", "-c", "exit 14"}, aenv{"sh", "-c", "exit $SEM_CODE"}, e15{"SEM_CODE=15"};
    pid_t pid = -1;
    fflush(stdout);
    int rc = ::posix_spawn(&pid, "/bin/sh", nullptr, nullptr, a13.get(), environ);
    expect_str("posix_spawn /bin/sh exit 13", spawn_status(rc, pid), "exit 13");
    rc = ::posix_spawnp(&pid, "sh", nullptr, nullptr, a14.get(), environ);
    expect_str("posix_spawnp sh exit 14", spawn_status(rc, pid), "exit 14");
    rc = ::posix_spawn(&pid, "/bin/sh", nullptr, nullptr, aenv.get(), e15.get());
    expect_str("posix_spawn with env SEM_CODE=15", spawn_status(rc, pid), "exit 15");
    rc = ::posix_spawn(&pid, "/nonexistent/sdx", nullptr, nullptr, a13.get(), environ);
    expect_str("posix_spawn missing file returns the error", errname(rc), "ENOENT");
    rc = ::posix_spawnp(&pid, "sdx-no-such-command", nullptr, nullptr, a13.get(), environ);
    expect_str("posix_spawnp unknown command returns the error", errname(rc), "ENOENT");
    rc = ::posix_spawn(&pid, "/etc/passwd", nullptr, nullptr, a13.get(), environ);
    expect_str("posix_spawn non-executable returns the error", errname(rc), "EACCES");

    // File actions: the child's stdout is a connected TCP socket.
    int c, s;
    tcp_pair(c, s);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, c, 1);
    Argv echo{"sh", "-c", "echo spawned"};
    rc = ::posix_spawnp(&pid, "sh", &fa, nullptr, echo.get(), environ);
    expect_str("posix_spawnp with stdout dup2'd to a socket", spawn_status(rc, pid), "exit 0");
    expect_str("spawned child's output arrives on the socket", recv_exact(s, 8), "spawned\n");
    posix_spawn_file_actions_destroy(&fa);

    // A FD_CLOEXEC socket is not inherited; a plain one is.
    std::string exe = self_exe();
    Argv st{exe, "--child", "fd-state", std::to_string(c)};
    rc = ::posix_spawn(&pid, exe.c_str(), nullptr, nullptr, st.get(), environ);
    expect_str("posix_spawn: plain socket inherited", spawn_status(rc, pid), "exit 22");
    ::fcntl(c, F_SETFD, FD_CLOEXEC);
    rc = ::posix_spawn(&pid, exe.c_str(), nullptr, nullptr, st.get(), environ);
    expect_str("posix_spawn: FD_CLOEXEC socket not inherited", spawn_status(rc, pid), "exit 21");
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addclose(&fa, s);
    Argv st2{exe, "--child", "fd-state", std::to_string(s)};
    rc = ::posix_spawn(&pid, exe.c_str(), &fa, nullptr, st2.get(), environ);
    expect_str("posix_spawn: addclose closes the socket in the child", spawn_status(rc, pid), "exit 21");
    posix_spawn_file_actions_destroy(&fa);
    close_all({c, s});
}

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 3 && strcmp(argv[1], "--child") == 0) return child_main(argc, argv);
    start();
    test_fork();
    test_vfork();
    test_exec_family();
    test_spawn();
    return finish();
}
