//! Plain-text tables for terminal output: left-aligned columns separated by two spaces.

use std::fmt::Write;

/// Renders `header` and `rows`; the last column is not padded.
pub fn render<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
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
        assert_eq!(super::render(["HOST", "STATUS"], &rows), "HOST       STATUS\ncp1        ok\nworker-10  fail\n");
    }
}
