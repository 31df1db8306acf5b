//! Issue 17's goals, checked against what the WAN bench measured on each profile: every
//! ratio is of figures taken in the same run over the same emulated path.

use std::time::Duration;

use crate::bench::{Carrier, ProfileReport};

/// One goal on one profile.
#[derive(Clone, Debug)]
pub struct Check {
    /// The profile.
    pub profile: &'static str,
    /// What is measured.
    pub what: &'static str,
    /// The measured figure, as printed.
    pub value: String,
    /// The goal, as printed (empty: reported only).
    pub goal: String,
    /// Whether the goal was met (`None`: no goal here, or nothing to judge by).
    pub met: Option<bool>,
}

fn carrier<'a>(r: &'a ProfileReport, name: &str) -> Option<&'a Carrier> {
    r.carriers.iter().find(|c| c.name == name)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The goodput toxtun must reach, as a fraction of kernel TCP BBR's, on `profile`.
fn bbr_goal(profile: &str) -> Option<f64> {
    match profile {
        "broadband" | "intercontinental" | "bloated-dsl" => Some(0.9),
        "lossy-wifi" => Some(0.8),
        _ => None,
    }
}

/// Each goal that applies to `r`, judged.
pub fn check(r: &ProfileReport) -> Vec<Check> {
    let name = r.profile.name;
    let mut out = Vec::new();
    let mut push = |what, value: String, goal: String, met: Option<bool>| {
        out.push(Check {
            profile: name,
            what,
            value,
            goal,
            met,
        })
    };
    let Some(tox) = carrier(r, "toxtun") else {
        return out;
    };
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b.max(1e-9));
    if let Some(bbr) = carrier(r, "kernel TCP bbr") {
        let goal = bbr_goal(name);
        for (what, t, k) in [
            ("download ÷ kernel BBR", &tox.down, &bbr.down),
            ("upload ÷ kernel BBR", &tox.up, &bbr.up),
        ] {
            let x = ratio(t.median(), k.median());
            push(
                what,
                x.map_or("—".into(), |x| format!("{x:.2}")),
                goal.map_or(String::new(), |g| format!("≥ {g}")),
                goal.and_then(|g| x.map(|x| x >= g)),
            );
        }
        let gap = tox.idle_rtt.zip(bbr.idle_rtt).map(|(t, k)| ms(t) - ms(k));
        push(
            "idle RTT − kernel TCP's",
            gap.map_or("—".into(), |g| format!("{g:+.1} ms")),
            "≤ 1 ms".into(),
            gap.map(|g| g <= 1.0),
        );
    }
    if let Some(lossless) = carrier(r, "toxtun lossless") {
        for (what, t, l) in [
            ("download ÷ lossless", &tox.down, &lossless.down),
            ("upload ÷ lossless", &tox.up, &lossless.up),
        ] {
            let x = ratio(t.median(), l.median());
            push(
                what,
                x.map_or("—".into(), |x| format!("{x:.1}")),
                "≥ 3".into(),
                x.map(|x| x >= 3.0),
            );
        }
    }
    let under_load = tox
        .loaded_rtt
        .zip(tox.idle_rtt)
        .map(|((m, _), idle)| ms(m) - ms(idle));
    let latency_goal = matches!(name, "broadband" | "bloated-dsl");
    push(
        "RTT under load − idle",
        under_load.map_or("—".into(), |g| format!("{g:+.1} ms")),
        if latency_goal {
            "≤ 20 ms".into()
        } else {
            String::new()
        },
        under_load.filter(|_| latency_goal).map(|g| g <= 20.0),
    );
    out.extend(coexistence(r, tox));
    out
}

/// Toxtun's share beside one CUBIC flow, judged where the path has no random loss (under
/// random loss CUBIC cannot fill the link even alone: 0.3 MB/s of 12 at 1%), with kernel
/// BBR's share beside the same flow for comparison.
fn coexistence(r: &ProfileReport, tox: &Carrier) -> Option<Check> {
    let (t, k) = tox.coexist?;
    let judged = r.profile.path.loss == 0.0;
    let x = t / k.max(1e-9);
    let kernel = carrier(r, "kernel TCP bbr")
        .and_then(|c| c.coexist)
        .map_or(String::new(), |(b, k)| {
            format!("; kernel BBR {:.2} ({b:.2} vs {k:.2})", b / k.max(1e-9))
        });
    Some(Check {
        profile: r.profile.name,
        what: "beside one CUBIC flow: toxtun ÷ CUBIC",
        value: format!("{x:.2} ({t:.2} vs {k:.2} MB/s){kernel}"),
        goal: if judged {
            "0.5 – 2".into()
        } else {
            String::new()
        },
        met: judged.then_some((0.5..=2.0).contains(&x)),
    })
}

/// The checks as one line each, for the bench's output.
pub fn lines(checks: &[Check]) -> String {
    checks
        .iter()
        .map(|c| {
            let mark = match c.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "",
            };
            format!("    {:<38} {:<28} {:<8} {mark}", c.what, c.value, c.goal)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The checks as a Markdown table (for BENCHMARKS.md).
pub fn markdown(checks: &[Check]) -> String {
    let mut s = String::from("| profile | measure | toxtun | goal | |\n|---|---|---|---|---|\n");
    for c in checks {
        let mark = match c.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "",
        };
        s += &format!(
            "| {} | {} | {} | {} | {mark} |\n",
            c.profile, c.what, c.value, c.goal
        );
    }
    s
}
