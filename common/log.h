// The one logger of phi-cluster (spdlog). `phi::log()` returns the process logger created by
// `init_logging`; before that it is spdlog's default stderr logger.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace phi {

/// Sets up the process logger: level ("trace".."off"), and the rank, which prefixes every line.
void init_logging(const std::string& level, int rank);

/// The process logger.
spdlog::logger& log();

}  // namespace phi
