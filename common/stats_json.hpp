// JSON of the live statistics (common/stats_shm.hpp), shared by `sdx stats --json` and the stats
// file a process writes at exit, so the two always agree.  The schema is in sdx(1), STATISTICS.
#pragma once

#include <string>

#include "common/stats_shm.hpp"

namespace sdx::shmstats {

// `"sockets":{..},"bytes":{..},"fallbacks":{..}` for the process totals (no braces around).
std::string totals_json(const Totals& t);
// `[{"fd":..,"path":..,...}, ...]`: every socket line in use.
std::string live_json(const Region& r);
// "host:port" or "[v6]:port" of a socket line's peer, "-" when unknown.
std::string peer_text(const SocketSlot& s);

}  // namespace sdx::shmstats
