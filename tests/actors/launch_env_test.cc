// Tests of actors/launch_env.h: torchrun's and Slurm's variables (from a map, not the process
// environment) read into ranks, process counts and rank 0's address; Slurm host lists; every
// malformed or missing variable named; the local route's address.
#include "actors/launch_env.h"

#include <catch2/catch.hpp>
#include <map>

namespace meshpipe::actors {
namespace {

Expected<std::optional<LaunchEnv>> read(const std::map<std::string, std::string>& vars,
                                        const std::string& which = "auto") {
  return read_launch_env(which, [&](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

std::string error_of(const std::map<std::string, std::string>& vars,
                     const std::string& which = "auto") {
  auto r = read(vars, which);
  REQUIRE_FALSE(r.has_value());
  return r.status().message();
}

// `vars` with `name` set to `value` (a function: GCC 12 warns wrongly on assigning a literal).
std::map<std::string, std::string> with_var(std::map<std::string, std::string> vars,
                                            const std::string& name, const std::string& value) {
  vars.insert_or_assign(name, value);
  return vars;
}

const std::map<std::string, std::string> kTorchrun = {{"RANK", "3"},
                                                      {"WORLD_SIZE", "4"},
                                                      {"LOCAL_RANK", "0"},
                                                      {"MASTER_ADDR", "10.0.0.7"},
                                                      {"MASTER_PORT", "29500"}};
const std::map<std::string, std::string> kSlurm = {{"SLURM_PROCID", "1"},
                                                   {"SLURM_NTASKS", "2"},
                                                   {"SLURM_LOCALID", "0"},
                                                   {"SLURM_JOB_NODELIST", "gpu[007-009,12],cpu1"},
                                                   {"MESHPIPE_PORT", "4000"}};

TEST_CASE("torchrun's and Slurm's variables give rank, size and rank 0's address", "[actors]") {
  auto t = read(kTorchrun);
  REQUIRE(t.has_value());
  REQUIRE(t->has_value());
  CHECK((*t)->launcher == "torchrun");
  CHECK((*t)->rank == 3);
  CHECK((*t)->world_size == 4);
  CHECK((*t)->master_addr == "10.0.0.7");
  CHECK((*t)->port == 29500);
  auto s = read(kSlurm);
  REQUIRE(s.has_value());
  REQUIRE(s->has_value());
  CHECK((*s)->launcher == "slurm");
  CHECK((*s)->rank == 1);
  CHECK((*s)->world_size == 2);
  CHECK((*s)->master_addr == "gpu007");
  CHECK((*s)->port == 4000);
  // MASTER_ADDR wins under Slurm too, MESHPIPE_PORT over MASTER_PORT (torchrun's static
  // rendezvous keeps MASTER_PORT for its store); torchrun's variables win under auto.
  auto both = kSlurm;
  both.insert(kTorchrun.begin(), kTorchrun.end());
  CHECK((*read(both))->launcher == "torchrun");
  CHECK((*read(both))->port == 4000);
  CHECK((*read(both, "slurm"))->master_addr == "10.0.0.7");
  CHECK(read(kTorchrun, "slurm").status().message().find("SLURM_NTASKS") != std::string::npos);
  // Neither: empty; "none": empty even when set.
  CHECK_FALSE(read({})->has_value());
  CHECK_FALSE(read(kTorchrun, "none")->has_value());
}

TEST_CASE("a launcher's variables that cannot be right are named", "[actors]") {
  auto t = kTorchrun;
  t = with_var(t, "RANK", "4");
  CHECK(error_of(t).find("RANK 4 is not below WORLD_SIZE 4") != std::string::npos);
  t = with_var(t, "RANK", "-1");
  CHECK(error_of(t).find("RANK='-1' is not a whole number") != std::string::npos);
  t = with_var(t, "RANK", "1x");
  CHECK(error_of(t).find("RANK='1x'") != std::string::npos);
  t = kTorchrun;
  t = with_var(t, "LOCAL_RANK", "1");
  CHECK(error_of(t).find("one process per machine") != std::string::npos);
  CHECK(error_of(t).find("--nproc-per-node 1") != std::string::npos);
  t = kTorchrun;
  t.erase("MASTER_ADDR");
  CHECK(error_of(t).find("MASTER_ADDR is not set") != std::string::npos);
  t = kTorchrun;
  t.erase("MASTER_PORT");
  CHECK(error_of(t).find("export MASTER_PORT") != std::string::npos);
  t = kTorchrun;
  t = with_var(t, "MASTER_PORT", "70000");
  CHECK(error_of(t).find("MASTER_PORT='70000'") != std::string::npos);
  auto s = kSlurm;
  s = with_var(s, "SLURM_LOCALID", "2");
  CHECK(error_of(s).find("srun --ntasks-per-node 1") != std::string::npos);
  s = kSlurm;
  s.erase("SLURM_JOB_NODELIST");
  CHECK(error_of(s).find("rank 0's host is unknown") != std::string::npos);
  CHECK(error_of({}, "slurm").find("SLURM_NTASKS is not set") != std::string::npos);
  CHECK(error_of({}, "pbs").find("not auto, slurm, torchrun or none") != std::string::npos);
}

TEST_CASE("the first host of a Slurm host list", "[actors]") {
  CHECK(*first_slurm_host("node1") == "node1");
  CHECK(*first_slurm_host("a,b") == "a");
  CHECK(*first_slurm_host("gpu[07-09]") == "gpu07");
  CHECK(*first_slurm_host("gpu[12,3]") == "gpu12");
  CHECK(*first_slurm_host("login1,gpu[1-2]") == "login1");
  for (const char* bad : {"", "[1-2]", "gpu[", "gpu[a-b]", "gpu[]", ",x", "a]"}) {
    INFO(bad);
    CHECK_FALSE(first_slurm_host(bad).has_value());
  }
}

TEST_CASE("the address that routes to a host", "[actors]") {
  auto a = local_address_towards("127.0.0.1", 9);
  REQUIRE(a.has_value());
  CHECK(*a == "127.0.0.1");
  CHECK_FALSE(local_address_towards("no-such-host.invalid", 9).has_value());
}

}  // namespace
}  // namespace meshpipe::actors
