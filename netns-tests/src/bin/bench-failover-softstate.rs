//! The soft state's failover promise, measured from outside (run by
//! `scripts/bench-failover-softstate.sh`, as root): in the real pair, clients hold sticky
//! sessions (learn and insert mode) and rate-limit buckets, the master is lost (kill -9 of
//! vrrpd and lbd, link down) at a random moment (steady updates, during a resync, 50 ms
//! after a burst of new sessions), and every client comes back through the backup. See
//! `netns_tests::pair::failover_soft` for the method.
//!
//! Usage: `bench-failover-softstate [--seed S] [--rounds N] [--moments steady,resync,burst]
//! [--clients N] [--buckets N] [--rate R] [--burst B] [--threads T]`. Exits 1 if any kill
//! missed the promise (≥ 99.9% of sessions older than 200 ms keep their backend; each
//! bucket within one refill interval).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use netns_tests::pair::failover_soft::{
    self, KillMoment, ModeFigures, Opts, Outcome, RateFigures, Rng, OLD,
};

struct Args {
    seed: u64,
    rounds: usize,
    moments: Vec<KillMoment>,
    opts: Opts,
}

const USAGE: &str = "usage: bench-failover-softstate [--seed S] [--rounds N] \
                     [--moments steady,resync,burst] [--clients N] [--buckets N] [--rate R] \
                     [--burst B] [--threads T] [--sustained N] [--resync-ms MS]";

fn parse_args() -> Result<Args> {
    let mut args = Args {
        seed: Rng::fresh_seed(),
        rounds: 1,
        moments: KillMoment::ALL.to_vec(),
        opts: Opts {
            quiet_teardown: true,
            ..Opts::default()
        },
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))?;
        let bad = || format!("{flag} {value:?}\n{USAGE}");
        match flag.as_str() {
            "--seed" => args.seed = value.parse().with_context(bad)?,
            "--rounds" => args.rounds = value.parse().with_context(bad)?,
            "--clients" => args.opts.clients = value.parse().with_context(bad)?,
            "--buckets" => args.opts.buckets = value.parse().with_context(bad)?,
            "--rate" => args.opts.rate = value.parse().with_context(bad)?,
            "--burst" => args.opts.burst = value.parse().with_context(bad)?,
            "--threads" => args.opts.threads = value.parse().with_context(bad)?,
            "--sustained" => args.opts.sustained_buckets = value.parse().with_context(bad)?,
            "--resync-ms" => {
                args.opts.resync = Duration::from_millis(value.parse().with_context(bad)?)
            }
            "--moments" => {
                args.moments = value
                    .split(',')
                    .map(|m| match m.trim() {
                        "steady" => Ok(KillMoment::Steady),
                        "resync" => Ok(KillMoment::Resync),
                        "burst" => Ok(KillMoment::AfterBurst),
                        other => bail!("unknown moment {other:?} (steady, resync, burst)"),
                    })
                    .collect::<Result<_>>()?
            }
            _ => bail!("unknown option {flag}\n{USAGE}"),
        }
    }
    let rate_ok = args.opts.rate.is_finite() && args.opts.rate > 0.0;
    if !rate_ok || args.opts.burst == 0 || args.opts.buckets == 0 {
        bail!("--rate and --burst must be positive, --buckets at least 1");
    }
    Ok(args)
}

fn mode_line(name: &str, f: &ModeFigures) -> String {
    format!(
        "  {name:<7} sessions {:>5} | older than {OLD:?} {:>5}, kept {:>5} = {:>7.3}% (may move {}: {}) | \
         younger {:>4}, kept {:>4} | unanswered {}",
        f.total,
        f.old,
        f.old_kept,
        f.old_kept_pct(),
        f.allowed_moves(),
        if f.meets_promise() { "ok" } else { "MISSED" },
        f.young,
        f.young_kept,
        f.unanswered
    )
}

fn print_outcome(round: usize, o: &Outcome, rate: f64) {
    println!(
        "round {round}, kill {}: drawn delay {:?}; at the kill the backup was {} with {} records \
         (master {}); backup held the VIP {:?} after the kill",
        o.moment.name(),
        o.drawn,
        o.backup_phase,
        o.backup_records,
        o.master_records,
        o.takeover
    );
    for n in &o.notes {
        println!("  note: {n}");
    }
    println!("{}", mode_line("learn", &o.learn));
    println!("{}", mode_line("insert", &o.insert));
    let r = &o.rate;
    println!(
        "  buckets {:>5} | error per bucket in refill intervals ({:?}): first burst after the \
         failover worst {:+}, beyond ±1: {}; with {} clients sending on: worst {:+}, beyond ±1: \
         {} ({}) | allowed after the failover {} vs the limit's {} | pre-kill model mismatches {}",
        r.buckets,
        Duration::from_secs_f64(1.0 / rate),
        RateFigures::worst(&r.first_burst_errors),
        RateFigures::beyond_one_interval(&r.first_burst_errors),
        r.sustained,
        RateFigures::worst(&r.errors),
        RateFigures::beyond_one_interval(&r.errors),
        if r.meets_promise() { "ok" } else { "MISSED" },
        r.allowed_after,
        r.ideal_after,
        r.pre_kill_mismatches
    );
}

/// One row per moment: the worst round and the sum over rounds.
fn print_summary(all: &[(usize, Outcome)], rounds: usize) {
    println!();
    println!(
        "| kill | rounds | learn: old sessions kept | worst round | insert: old kept | worst round | \
         young kept (learn / insert) | buckets beyond ±1 interval: first burst | worst | all requests \
         after the failover (some clients sustained) | worst | takeover ms (max) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for moment in KillMoment::ALL {
        let rows: Vec<&Outcome> = all
            .iter()
            .filter(|(_, o)| o.moment == moment)
            .map(|(_, o)| o)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let sum = |f: fn(&Outcome) -> &ModeFigures| {
            rows.iter().fold(ModeFigures::default(), |mut acc, o| {
                let m = f(o);
                acc.old += m.old;
                acc.old_kept += m.old_kept;
                acc.young += m.young;
                acc.young_kept += m.young_kept;
                acc
            })
        };
        let worst = |f: fn(&Outcome) -> &ModeFigures| {
            rows.iter()
                .map(|o| f(o).old_kept_pct())
                .fold(100.0_f64, f64::min)
        };
        let (learn, insert) = (sum(|o| &o.learn), sum(|o| &o.insert));
        let first: Vec<i64> = rows
            .iter()
            .flat_map(|o| o.rate.first_burst_errors.iter().copied())
            .collect();
        let total: Vec<i64> = rows
            .iter()
            .flat_map(|o| o.rate.errors.iter().copied())
            .collect();
        let buckets: usize = rows.iter().map(|o| o.rate.buckets).sum();
        let sustained: usize = rows.iter().map(|o| o.rate.sustained).sum();
        let takeover = rows.iter().map(|o| o.takeover).max().unwrap_or_default();
        println!(
            "| {} | {}/{rounds} | {}/{} = {:.3}% | {:.3}% | {}/{} = {:.3}% | {:.3}% | {}/{} / {}/{} | \
             {} of {buckets} | {:+} | {} of {buckets} ({sustained} sustained) | {:+} | {} |",
            moment.name(),
            rows.len(),
            learn.old_kept,
            learn.old,
            learn.old_kept_pct(),
            worst(|o| &o.learn),
            insert.old_kept,
            insert.old,
            insert.old_kept_pct(),
            worst(|o| &o.insert),
            learn.young_kept,
            learn.young,
            insert.young_kept,
            insert.young,
            RateFigures::beyond_one_interval(&first),
            RateFigures::worst(&first),
            RateFigures::beyond_one_interval(&total),
            RateFigures::worst(&total),
            takeover.as_millis()
        );
    }
}

fn main() -> ExitCode {
    // The pair prints its daemons' logs when dropped; a benchmark wants only its figures.
    if std::env::var_os("NETNS_QUIET").is_none() {
        eprintln!("(set NETNS_QUIET=1 to skip the daemons' logs after each round)");
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    println!(
        "seed {} ({} round(s); replay with --seed {}); {} sticky sessions per mode, {} buckets \
         (rate {}/s, burst {}), {} client threads",
        args.seed,
        args.rounds,
        args.seed,
        args.opts.clients,
        args.opts.buckets,
        args.opts.rate,
        args.opts.burst,
        args.opts.threads
    );
    let mut rng = Rng::new(args.seed);
    let mut all = Vec::new();
    let mut failed = false;
    for round in 1..=args.rounds {
        for &moment in &args.moments {
            let tag = format!("fs{round}-{}", moment.tag());
            match failover_soft::run(&tag, moment, &args.opts, &mut rng) {
                Ok(o) => {
                    print_outcome(round, &o, args.opts.rate);
                    failed |= !o.meets_promise();
                    all.push((round, o));
                }
                Err(e) => {
                    println!("round {round}, kill {}: ERROR {e:#}", moment.name());
                    failed = true;
                }
            }
        }
    }
    print_summary(&all, args.rounds);
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
