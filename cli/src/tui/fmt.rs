//! Compact, fixed-width friendly formatting for table cells.

use std::time::Duration;

/// Bytes in binary units, at most 5 characters: `0`, `999B`, `3.9K`, `123K`, `1.5M`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if n == 0 {
        return "0".into();
    }
    if n < 1000 {
        return format!("{n}B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 999.5 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 9.95 {
        format!("{value:.1}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}

/// Bytes per second; `-` when the rate is unknown.
pub fn byte_rate(rate: Option<f64>) -> String {
    match rate {
        None => "-".into(),
        Some(r) if r < 0.5 => "0".into(),
        Some(r) => bytes(r.round() as u64),
    }
}

/// A count per second: `0`, `0.5`, `12`, `1.2k`, `34k`, `1.2M`.
pub fn rate(rate: Option<f64>) -> String {
    let Some(r) = rate else {
        return "-".into();
    };
    if r <= 0.0 {
        "0".into()
    } else if r < 9.95 {
        format!("{r:.1}")
    } else if r < 999.5 {
        format!("{r:.0}")
    } else if r < 9_950.0 {
        format!("{:.1}k", r / 1e3)
    } else if r < 999_500.0 {
        format!("{:.0}k", r / 1e3)
    } else {
        format!("{:.1}M", r / 1e6)
    }
}

/// A duration at the precision a glance needs: `640µs`, `850ms`, `4.2s`, `3m07s`, `2h05m`,
/// `3d04h`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms == 0 {
        format!("{}µs", d.as_micros())
    } else if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

/// A latency in microseconds: `87µs`, `1.2ms`, `340ms`, `1.3s`.
pub fn latency_us(us: f64) -> String {
    if !us.is_finite() || us < 0.0 {
        "-".into()
    } else if us < 999.5 {
        format!("{us:.0}µs")
    } else if us < 9_950.0 {
        format!("{:.1}ms", us / 1e3)
    } else if us < 999_500.0 {
        format!("{:.0}ms", us / 1e3)
    } else {
        format!("{:.1}s", us / 1e6)
    }
}

/// A merged latency's quantile: `≤` marks an upper bound (see `rates::merged_latency`).
pub fn latency_bound(us: f64, exact: bool) -> String {
    let text = latency_us(us);
    if exact || text == "-" {
        text
    } else {
        format!("≤{text}")
    }
}

/// A percentage: `-` when unknown, `0`, `0.5`, `12`, `100`.
pub fn percent(p: Option<f64>) -> String {
    match p {
        None => "-".into(),
        Some(p) if p <= 0.0 => "0".into(),
        Some(p) if p < 9.95 => format!("{p:.1}"),
        Some(p) => format!("{p:.0}"),
    }
}

/// Interval as typed by a user: `0.25s`, `1s`, `2.5s`.
pub fn interval(d: Duration) -> String {
    let s = d.as_secs_f64();
    if (s - s.round()).abs() < 1e-9 {
        format!("{s:.0}s")
    } else {
        format!("{s}s")
    }
}

/// Cuts `text` to `width` characters, marking the cut with `…`.
pub fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// Cuts `text` to `width` characters from the left: `…/ksight-workload`.
pub fn truncate_left(text: &str, width: usize) -> String {
    let len = text.chars().count();
    if len <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out = String::from("…");
    out.extend(text.chars().skip(len - (width - 1)));
    out
}

/// Cuts an owner name (a `CgroupLabels::display_name`) where it says least: a Kubernetes
/// `namespace/pod/container` in the middle, where the pod's generated suffix is
/// (`shop/web-7…-x2x4k/nginx`); a path (a cgroup with no better name) at its start, like
/// the other paths on screen; `runtime:id`, a systemd unit or `pod <uid>` at the end, as
/// ids are known by their prefix.
pub fn truncate_name(text: &str, width: usize) -> String {
    let len = text.chars().count();
    if len <= width {
        return text.to_string();
    }
    if text.starts_with('/') {
        return truncate_left(text, width);
    }
    if !text.contains('/') || width < 3 {
        return truncate(text, width);
    }
    let head = (width - 1) / 2;
    let tail = width - 1 - head;
    let mut out: String = text.chars().take(head).collect();
    out.push('…');
    out.extend(text.chars().skip(len - tail));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_fit_five_characters() {
        assert_eq!(bytes(0), "0");
        assert_eq!(bytes(999), "999B");
        assert_eq!(bytes(4000), "3.9K");
        assert_eq!(bytes(6000), "5.9K");
        assert_eq!(bytes(200 * 1024), "200K");
        assert_eq!(bytes(1023 * 1024), "1.0M");
        assert_eq!(bytes(u64::MAX), "16E");
        for n in [0, 999, 1000, 10_239, 1 << 20, 1 << 40, u64::MAX] {
            assert!(bytes(n).chars().count() <= 5, "{n}: {}", bytes(n));
        }
    }

    #[test]
    fn rates_and_durations() {
        assert_eq!(rate(None), "-");
        assert_eq!(rate(Some(0.0)), "0");
        assert_eq!(rate(Some(0.5)), "0.5");
        assert_eq!(rate(Some(12.2)), "12");
        assert_eq!(rate(Some(1234.0)), "1.2k");
        assert_eq!(rate(Some(2.5e6)), "2.5M");
        assert_eq!(byte_rate(Some(2000.0)), "2.0K");
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_micros(640)), "640µs");
        assert_eq!(duration(Duration::from_millis(4200)), "4.2s");
        assert_eq!(duration(Duration::from_secs(187)), "3m07s");
        assert_eq!(duration(Duration::from_secs(7500)), "2h05m");
        assert_eq!(latency_us(87.0), "87µs");
        assert_eq!(latency_us(1234.0), "1.2ms");
        assert_eq!(latency_us(1.3e6), "1.3s");
        assert_eq!(latency_bound(1234.0, false), "≤1.2ms");
        assert_eq!(latency_bound(87.0, true), "87µs");
        assert_eq!(percent(None), "-");
        assert_eq!(percent(Some(0.0)), "0");
        assert_eq!(percent(Some(2.54)), "2.5");
        assert_eq!(percent(Some(100.0)), "100");
        assert_eq!(interval(Duration::from_millis(250)), "0.25s");
        assert_eq!(interval(Duration::from_secs(2)), "2s");
        assert_eq!(truncate("ksight-workload", 6), "ksigh…");
        assert_eq!(truncate("abc", 6), "abc");
        assert_eq!(truncate_left("/usr/bin/sleep", 8), "…n/sleep");
        assert_eq!(truncate_left("abc", 3), "abc");
        assert_eq!(
            truncate_name("shop/web-7d9f8b6c5-x2x4k/nginx", 17),
            "shop/web…4k/nginx"
        );
        assert_eq!(
            truncate_name("docker:0123456789ab", 19),
            "docker:0123456789ab"
        );
        assert_eq!(truncate_name("/kubepods/burstable", 10), "…burstable");
        for w in 0..12 {
            assert_eq!(truncate_name("nginx.service-long", w).chars().count(), w);
        }
    }
}
