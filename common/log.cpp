// spdlog keeps its registry itself; we only choose pattern and level once per process.
#include "common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include "common/error.h"

namespace phi {

void init_logging(const std::string& level, int rank) {
    auto lvl = spdlog::level::from_str(level);
    PHI_CHECK(lvl != spdlog::level::off || level == "off",
              "log level '{}' is not one of trace, debug, info, warn, error, critical, off", level);
    auto logger = spdlog::stderr_color_mt(fmt::format("rank{}", rank));
    logger->set_pattern("%Y-%m-%d %H:%M:%S.%e [%n] %^%l%$ %v");
    logger->set_level(lvl);
    spdlog::set_default_logger(logger);
}

spdlog::logger& log() { return *spdlog::default_logger(); }

}  // namespace phi
