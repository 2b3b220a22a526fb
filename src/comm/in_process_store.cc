// make_in_process_store: the RendezvousStore of ranks that are threads of one process, a map
// guarded by a mutex whose readers wait on a condition variable.
#include <condition_variable>
#include <map>
#include <mutex>

#include "comm/communicator.h"

namespace meshpipe::comm {
namespace {

class InProcessStore final : public RendezvousStore {
 public:
  void set(const std::string& key, const std::string& value) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      values_[key] = value;
    }
    cv_.notify_all();
  }

  Expected<std::string> get(const std::string& key, std::chrono::milliseconds timeout) override {
    std::unique_lock<std::mutex> lock(mu_);
    const bool found =
        cv_.wait_for(lock, timeout, [&] { return values_.find(key) != values_.end(); });
    if (!found) {
      return make_error(Errc::kTimeout, "rendezvous key '{}' was not set within {} ms", key,
                        timeout.count());
    }
    return values_.at(key);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::string> values_;
};

}  // namespace

std::shared_ptr<RendezvousStore> make_in_process_store() {
  return std::make_shared<InProcessStore>();
}

}  // namespace meshpipe::comm
