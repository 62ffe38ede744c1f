// Start-up cost: how much longer does a short program take under sdx?
//
//   startup N -- CMD_A... -- CMD_B... [-- CMD_C...]
// runs each command N times, interleaved (A B C A B C ...), and prints the median and p90 wall time
// of each in microseconds as JSON.  Environment variables may be given as NAME=VALUE words before a
// command's program, as with env(1).
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern char** environ;

namespace {

struct Command {
    std::vector<char*> argv;
    std::vector<std::string> env_storage;
    std::vector<char*> envp;
    std::vector<double> us;
    std::string label;
};

double run_once(Command& c) {
    auto t0 = std::chrono::steady_clock::now();
    pid_t pid;
    if (posix_spawnp(&pid, c.argv[0], nullptr, nullptr, c.argv.data(), c.envp.data()) != 0) {
        std::perror(c.argv[0]);
        std::exit(1);
    }
    int status;
    waitpid(pid, &status, 0);
    auto t1 = std::chrono::steady_clock::now();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::fprintf(stderr, "%s failed\n", c.label.c_str());
        std::exit(1);
    }
    return std::chrono::duration<double, std::micro>(t1 - t0).count();
}

double percentile(std::vector<double> v, double p) {
    std::sort(v.begin(), v.end());
    return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4 || std::strcmp(argv[2], "--") != 0) {
        std::fprintf(stderr, "usage: startup N -- CMD... [-- CMD...]\n");
        return 2;
    }
    int n = std::atoi(argv[1]);
    std::vector<Command> cmds;
    for (int i = 2; i < argc; ++i) {
        if (std::strcmp(argv[i], "--") == 0) {
            cmds.emplace_back();
            continue;
        }
        Command& c = cmds.back();
        if (c.argv.empty() && std::strchr(argv[i], '=')) {
            c.env_storage.emplace_back(argv[i]);
        } else {
            c.argv.push_back(argv[i]);
        }
        if (!c.label.empty()) c.label += ' ';
        c.label += argv[i];
    }
    for (auto& c : cmds) {
        c.argv.push_back(nullptr);
        for (char** e = environ; *e; ++e) c.envp.push_back(*e);
        for (auto& s : c.env_storage) c.envp.push_back(s.data());
        c.envp.push_back(nullptr);
        run_once(c);  // warm the page cache
    }
    for (int i = 0; i < n; ++i)
        for (auto& c : cmds) c.us.push_back(run_once(c));
    std::printf("{\"runs\":%d,\"commands\":[", n);
    for (std::size_t i = 0; i < cmds.size(); ++i)
        std::printf("%s{\"command\":\"%s\",\"median_us\":%.1f,\"p90_us\":%.1f}", i ? "," : "", cmds[i].label.c_str(),
                    percentile(cmds[i].us, 0.5), percentile(cmds[i].us, 0.9));
    std::printf("]}\n");
    return 0;
}
