//! One integration binary (fast to link): every test starts real processes or servers on
//! loopback sockets and talks real HTTP to them.

mod util;

mod admin_calls;
mod api_flows;
mod browser;
mod channel_selection;
mod channels;
mod cli;
mod deploy;
mod design;
mod docs;
mod egress;
mod emulator_subcommand;
mod examples;
mod families;
mod flows;
mod fuzz;
mod hardening;
mod idempotency;
mod lifecycle;
mod limits;
mod money;
mod operability;
mod platform;
mod prevalidation;
mod proxy;
mod redis_limits;
mod refusals;
mod robustness;
mod route_guards;
mod shared_money;
mod sign_vectors;
mod supervision;
mod tls;
mod upstream_failures;
