//! berth-compose: compose files (discovery, merge, interpolation, extends/include, profiles)
//! and the `up`/`down` planner that drives `berth-engine` (issue 7). Not written yet.
