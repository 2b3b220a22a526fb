// Crash and stop handlers: async-signal-safe code only (write, sigaction, raise, _exit).
#include "core/crash.h"

#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <initializer_list>

namespace meshpipe {

namespace {

const char* g_program = "meshpipe";
std::atomic<bool> g_stop{false};
std::atomic<int> g_stop_signal{0};

// Writes the concatenation of `parts` to standard error in one write (async-signal-safe), so
// messages from handlers running on two threads at once do not interleave.
void say(std::initializer_list<const char*> parts) {
  char line[512];
  size_t n = 0;
  for (const char* p : parts) {
    for (; *p != '\0' && n < sizeof(line); ++p) line[n++] = *p;
  }
  size_t done = 0;
  while (done < n) {
    const ssize_t w = ::write(STDERR_FILENO, line + done, n - done);
    if (w <= 0) return;
    done += static_cast<size_t>(w);
  }
}

const char* signal_text(int sig) {
  switch (sig) {
    case SIGSEGV:
      return "SIGSEGV (invalid memory access, or a stack overflow)";
    case SIGBUS:
      return "SIGBUS (bus error)";
    case SIGILL:
      return "SIGILL (illegal instruction)";
    case SIGFPE:
      return "SIGFPE (arithmetic fault)";
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    default:
      return "a signal";
  }
}

void on_crash(int sig) {
  say({g_program, ": fatal signal ", signal_text(sig), "; exiting\n"});
  // The default action: the process ends with the signal (exit status 128 + sig, a core dump
  // where enabled).
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  sigset_t self;
  sigemptyset(&self);
  sigaddset(&self, sig);
  ::sigprocmask(SIG_UNBLOCK, &self, nullptr);  // blocked while its handler runs
  ::raise(sig);
  ::_exit(128 + sig);
}

void on_stop(int sig) {
  if (g_stop.exchange(true)) {
    say({g_program, ": second stop signal; exiting now\n"});
    ::_exit(128 + sig);
  }
  g_stop_signal.store(sig);
  say({g_program, ": ", signal_text(sig),
       " received: stopping after the current step (again to exit at once)\n"});
}

}  // namespace

void install_crash_handlers(const char* program) {
  g_program = program;
  // A stack of its own, so the handler runs even when the fault is a stack overflow.
  static char alt_stack[1 << 16];
  stack_t ss{};
  ss.ss_sp = alt_stack;
  ss.ss_size = sizeof(alt_stack);
  ss.ss_flags = 0;
  ::sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_handler = on_crash;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_ONSTACK | SA_RESETHAND;
  for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE}) ::sigaction(sig, &sa, nullptr);
}

const std::atomic<bool>& install_stop_handlers(const char* program) {
  g_program = program;
  struct sigaction sa {};
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGINT, SIGTERM}) ::sigaction(sig, &sa, nullptr);
  return g_stop;
}

int stop_signal() { return g_stop_signal.load(); }

}  // namespace meshpipe
