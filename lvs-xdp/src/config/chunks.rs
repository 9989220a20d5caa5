//! A TOML file cut into its `[[service]]` tables and the rest, so that each is parsed on its
//! own: the document model of a 6 MB file of 10 000 services takes over 150 MiB, one service's
//! a few KiB. The cut is made only at table headers (a line that is nothing but `[name]` or
//! `[[name]]` with bare keys, outside multi-line strings), so each part is valid TOML whenever
//! the whole is, and the whole's errors are each part's.

/// A part of the file: its text and the line (0-based) it starts at.
pub struct Part<'a> {
    pub text: &'a str,
    pub first_line: usize,
}

/// The file cut into the parts that are not services (concatenated in order, as `rest`) and
/// each `[[service]]` table with its sub-tables.
pub struct Cut<'a> {
    pub rest: Vec<Part<'a>>,
    pub services: Vec<Part<'a>>,
}

/// The table a header line opens: `Some(true)` for `[[service]]`, `Some(false)` for another
/// top-level table or array of tables, `None` for a sub-table of a service (`[service.x]`,
/// `[[service.x]]`) or a line that is no header.
fn header(line: &str) -> Option<bool> {
    let l = line.split('#').next().unwrap_or("").trim();
    let inner = l
        .strip_prefix("[[")
        .and_then(|x| x.strip_suffix("]]"))
        .or_else(|| l.strip_prefix('[').and_then(|x| x.strip_suffix(']')))?;
    let keys: Vec<&str> = inner.split('.').map(str::trim).collect();
    let bare = |k: &&str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !keys.iter().all(bare) {
        return None;
    }
    let array = l.starts_with("[[");
    match (keys.as_slice(), array) {
        (["service"], true) => Some(true),
        (["service", ..], _) => None,
        _ => Some(false),
    }
}

pub fn cut(text: &str) -> Cut<'_> {
    let mut rest = Vec::new();
    let mut services = Vec::new();
    // (start byte, first line, is a service)
    let mut current = (0usize, 0usize, false);
    let mut in_string: Option<&str> = None;
    let mut at = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let start = at;
        at += line.len();
        if let Some(delim) = in_string {
            if line.matches(delim).count() % 2 == 1 {
                in_string = None;
            }
            continue;
        }
        for delim in ["\"\"\"", "'''"] {
            if line.matches(delim).count() % 2 == 1 {
                in_string = Some(delim);
            }
        }
        if in_string.is_some() {
            continue;
        }
        let Some(service) = header(line) else {
            continue;
        };
        let part = Part {
            text: &text[current.0..start],
            first_line: current.1,
        };
        if current.2 {
            services.push(part);
        } else {
            rest.push(part);
        }
        current = (start, n, service);
    }
    let part = Part {
        text: &text[current.0..],
        first_line: current.1,
    };
    if current.2 {
        services.push(part);
    } else {
        rest.push(part);
    }
    Cut { rest, services }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_the_rest_are_cut_at_their_headers() {
        let text = "flow_table_size = 64\n[[service]]\nvip = \"a\"\n[service.health_check]\ntype = \"tcp\"\n[[service.real_servers]]\naddress = \"b\"\n[timeouts]\ntcp = 5\n[[service]] # second\nvip = \"c\"\nnote = \"\"\"\n[[service]]\n\"\"\"\n";
        let c = cut(text);
        let rest: Vec<(&str, usize)> = c.rest.iter().map(|p| (p.text, p.first_line)).collect();
        assert_eq!(
            rest,
            [("flow_table_size = 64\n", 0), ("[timeouts]\ntcp = 5\n", 7)]
        );
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.services[0].first_line, 1);
        assert!(c.services[0].text.ends_with("address = \"b\"\n"));
        assert_eq!(c.services[1].first_line, 9);
        assert!(
            c.services[1]
                .text
                .contains("note = \"\"\"\n[[service]]\n\"\"\"")
        );
    }

    #[test]
    fn headers() {
        assert_eq!(header("[[service]]"), Some(true));
        assert_eq!(header("  [[ service ]]  # x"), Some(true));
        assert_eq!(header("[timeouts]"), Some(false));
        assert_eq!(header("[service.health_check]"), None);
        assert_eq!(header("[[service.real_servers]]"), None);
        assert_eq!(header("[1, 2],"), None);
        assert_eq!(header("vip = \"[x]\""), None);
    }
}
