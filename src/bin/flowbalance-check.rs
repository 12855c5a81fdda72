//! Validates DEFAULT_BACKENDS before the runtime starts, so `npm run dev` reports config errors up front.

use flowbalance::policy::access::prefix::parse_hostnames;
use flowbalance::policy::control::config::{parse_default_backends, Deployment};

fn main() {
    // Fail closed in the Worker (the prefix stays off), but say so before it starts.
    let prefix_hosts = std::env::var("ADMIN_PREFIX_HOSTNAMES").ok();
    if let Err(e) = parse_hostnames(prefix_hosts.as_deref()) {
        eprintln!("{e}");
        std::process::exit(2);
    }
    let text = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DEFAULT_BACKENDS").ok())
        .unwrap_or_default();
    if text.trim().is_empty() {
        println!(
            "DEFAULT_BACKENDS is empty: no services until one is created through the admin API"
        );
        return;
    }
    // The same deployment facts the Worker checks against: its admin hostname, if set.
    let admin = std::env::var("ADMIN_HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty());
    match parse_default_backends(&text, &Deployment::new(admin.as_deref(), vec![])) {
        Ok(services) => {
            for s in services {
                let urls: Vec<&str> = s.all_backends().iter().map(|b| b.url.as_str()).collect();
                println!("service {} -> {}", s.hostname, urls.join(", "));
            }
        }
        Err(errors) => {
            eprintln!("DEFAULT_BACKENDS is invalid:");
            for e in errors {
                eprintln!("  {e}");
            }
            std::process::exit(2);
        }
    }
}
