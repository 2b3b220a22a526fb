// Waiting on a condition of the in-process communicator and transport (private to src/comm):
// poll briefly, then sleep on the condition variable.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace meshpipe::comm::internal {

/// Waits, checking pred() while holding `lock`, until it holds or `deadline` passes (false
/// then; time_point::max(): no deadline). Polls first, yielding the core between checks, for
/// up to 200 us: a peer usually comes within that, and a thread woken from a condition
/// variable after its core went idle starts tens to hundreds of microseconds late, which a
/// training step paid at every collective (mlp-small data-parallel on 2 devices: 37 -> 31 ms a
/// step).
template <class Pred>
bool wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                std::chrono::steady_clock::time_point deadline, Pred pred) {
  using Clock = std::chrono::steady_clock;
  constexpr auto kSpin = std::chrono::microseconds(200);
  const auto spin_end = std::min(deadline, Clock::now() + kSpin);
  while (!pred()) {
    if (Clock::now() >= spin_end) {
      if (deadline == Clock::time_point::max()) {
        cv.wait(lock, pred);
        return true;
      }
      return cv.wait_until(lock, deadline, pred);
    }
    lock.unlock();
    std::this_thread::yield();
    lock.lock();
  }
  return true;
}

}  // namespace meshpipe::comm::internal
