//! Text for people: aligned tables and byte sizes, shared by every table the CLI prints.

use std::fmt::Write as _;

/// One column of a [`table`].
#[derive(Clone, Copy, Debug)]
pub struct Column<'a> {
    header: &'a str,
    right: bool,
    min_width: usize,
}

impl<'a> Column<'a> {
    /// A column aligned left.
    pub const fn left(header: &'a str) -> Self {
        Self {
            header,
            right: false,
            min_width: 0,
        }
    }

    /// A column aligned right (numbers, sizes).
    pub const fn right(header: &'a str) -> Self {
        Self {
            header,
            right: true,
            min_width: 0,
        }
    }

    /// Never narrower than `width`, so that the layout holds whatever the rows are.
    pub const fn at_least(self, width: usize) -> Self {
        Self {
            min_width: width,
            ..self
        }
    }
}

/// The header and `rows`, each line after `indent`: every column as wide as its widest cell,
/// columns two spaces apart. A left-aligned last column is not padded (its cells are often long
/// sentences), and no line ends in spaces.
pub fn table<R: AsRef<[String]>>(indent: &str, columns: &[Column<'_>], rows: &[R]) -> String {
    let mut widths: Vec<usize> = columns
        .iter()
        .map(|c| c.min_width.max(c.header.chars().count()))
        .collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.as_ref()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from(indent);
        for (i, (cell, col)) in cells.zip(columns).enumerate() {
            let w = widths[i];
            match (col.right, i + 1 == columns.len()) {
                (true, last) => {
                    let _ = write!(s, "{cell:>w$}");
                    if !last {
                        s.push_str("  ");
                    }
                }
                (false, true) => s.push_str(cell),
                (false, false) => {
                    let _ = write!(s, "{cell:<w$}  ");
                }
            }
        }
        let _ = writeln!(out, "{}", s.trim_end());
    };
    line(&mut columns.iter().map(|c| c.header));
    for row in rows {
        line(&mut row.as_ref().iter().map(String::as_str));
    }
    out
}

/// Binary units, one decimal: `12.3 MiB`; bytes as they are: `512 B`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(50 * 1024 * 1024), "50.0 MiB");
    }

    #[test]
    fn columns_align_and_lines_end_without_spaces() {
        let rows = vec![
            vec!["a".to_string(), "12".into(), "first".into()],
            vec!["longer".to_string(), "3".into(), String::new()],
        ];
        let cols = [
            Column::left("NAME"),
            Column::right("N").at_least(3),
            Column::left("WHY"),
        ];
        assert_eq!(
            table("  ", &cols, &rows),
            "  NAME      N  WHY\n  a        12  first\n  longer    3\n"
        );
    }
}
