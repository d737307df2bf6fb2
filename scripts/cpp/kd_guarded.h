// Shared by kd's C++ shims (kd-dist's c10d shim, kd-teachers' involution
// op): run a body behind a C ABI so that no C++ exception crosses into
// Rust; a failure comes back as one line of text and -1.
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>

namespace kd_shim {

// c10::Error's what() carries a C++ backtrace; the user gets one line.
inline void put_error(char* buf, size_t len, const std::exception& e) {
  const char* msg = e.what();
  if (auto* c10e = dynamic_cast<const c10::Error*>(&e)) {
    msg = c10e->what_without_backtrace();
  }
  std::string one(msg);
  for (auto& ch : one) {
    if (ch == '\n') ch = ' ';
  }
  std::snprintf(buf, len, "%s", one.c_str());
}

template <typename F>
int32_t guarded(char* err, size_t err_len, F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    put_error(err, err_len, e);
  } catch (...) {
    std::snprintf(err, err_len, "unknown C++ exception");
  }
  return -1;
}

}  // namespace kd_shim
