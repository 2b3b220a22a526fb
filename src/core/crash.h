// What a meshpipe process does when it crashes or is asked to stop.
//
// Crashes (SIGSEGV, SIGBUS, SIGILL, SIGFPE): libraries loaded with the binary (UCX among them)
// install handlers that print a backtrace and, on a stack overflow, can hang the process
// forever instead of exiting. install_crash_handlers replaces them with one that runs on its
// own stack, writes one line naming the signal and ends the process with the signal's default
// action (exit status 128 + signal), so a crash is always an exit.
//
// Stop requests (SIGINT, SIGTERM): install_stop_handlers makes the first one set a flag that
// the training session checks after every step (it then saves, when asked to, and exits
// non-zero); a second one ends the process at once.
#pragma once

#include <atomic>

namespace meshpipe {

/// Installs the crash handlers; `program` names the process in the message. Call early in main
/// and again after a library that installs its own may have (idempotent).
void install_crash_handlers(const char* program);

/// Installs the SIGINT/SIGTERM handlers and returns the flag the first signal sets.
const std::atomic<bool>& install_stop_handlers(const char* program);

/// The signal that set the stop flag (0: none yet).
int stop_signal();

}  // namespace meshpipe
