//! Text for people: tables for terminal output and errors on one line.

use std::error::Error;
use std::fmt::Write;

/// An error and its sources joined with `: `, skipping a source whose text the messages before
/// it already include (many errors quote their source).
pub fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        current = e.source();
    }
    text
}

/// Left-aligned columns separated by two spaces, under `header`; the last column is not padded.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; N]| {
        let text: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:w$}")).collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(header);
    for row in rows {
        line(row.each_ref().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_columns() {
        let rows = [["cp1".to_string(), "ok".to_string()], ["worker-10".to_string(), "fail".to_string()]];
        assert_eq!(super::table(["HOST", "STATUS"], &rows), "HOST       STATUS\ncp1        ok\nworker-10  fail\n");
    }
}
