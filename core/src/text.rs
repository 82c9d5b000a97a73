//! Text for people: aligned tables and byte sizes, shared by every table the CLI prints.

use std::fmt::Write as _;

/// One column of a [`table`].
#[derive(Clone, Copy, Debug)]
pub struct Column<'a> {
    header: &'a str,
    right: bool,
    min_width: usize,
    shrink: Shrink,
    floor: usize,
}

/// Whether a column may be narrowed to fit a width, and where its long cells lose characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shrink {
    Never,
    /// Sentences and names: the start says the most.
    End,
    /// Image references: the registry and the tag or digest both tell them apart.
    Middle,
    /// Reasons, in the last column: nothing is lost, the cell goes on over the next lines.
    Wrap,
}

/// By default no shrinkable column is narrowed below this, so that what is left still reads.
const MIN_SHRUNK: usize = 20;

impl<'a> Column<'a> {
    /// A column aligned left.
    pub const fn left(header: &'a str) -> Self {
        Self {
            header,
            right: false,
            min_width: 0,
            shrink: Shrink::Never,
            floor: MIN_SHRUNK,
        }
    }

    /// A column aligned right (numbers, sizes).
    pub const fn right(header: &'a str) -> Self {
        Self {
            header,
            right: true,
            min_width: 0,
            shrink: Shrink::Never,
            floor: MIN_SHRUNK,
        }
    }

    /// Never narrower than `width`, so that the layout holds whatever the rows are.
    pub const fn at_least(self, width: usize) -> Self {
        Self {
            min_width: width,
            ..self
        }
    }

    /// Never narrowed below `width` (20 unless told), nor below its header.
    pub const fn down_to(self, width: usize) -> Self {
        Self {
            floor: width,
            ..self
        }
    }

    /// May be narrowed to fit a width, its long cells ending in `…`.
    pub const fn shrinks(self) -> Self {
        Self {
            shrink: Shrink::End,
            ..self
        }
    }

    /// May be narrowed to fit a width, its long cells going on over the next lines (for the last
    /// column only; elsewhere it clips at the end).
    pub const fn wraps(self) -> Self {
        Self {
            shrink: Shrink::Wrap,
            ..self
        }
    }

    /// May be narrowed to fit a width, its long cells losing their middle to `…`.
    pub const fn shrinks_in_the_middle(self) -> Self {
        Self {
            shrink: Shrink::Middle,
            ..self
        }
    }
}

/// The header and `rows`, each line after `indent`: every column as wide as its widest cell,
/// columns two spaces apart. A left-aligned last column is not padded (its cells are often long
/// sentences), and no line ends in spaces.
pub fn table<R: AsRef<[String]>>(indent: &str, columns: &[Column<'_>], rows: &[R]) -> String {
    table_within(indent, columns, rows, None)
}

/// [`table`] in at most `width` characters a line when `width` is given: the widest shrinkable
/// columns are narrowed first (not below their floor nor their header, the last column last) and their long cells
/// clipped with `…`. Columns that do not shrink keep their width, so a line may still be longer.
pub fn table_within<R: AsRef<[String]>>(
    indent: &str,
    columns: &[Column<'_>],
    rows: &[R],
    width: Option<usize>,
) -> String {
    let mut widths: Vec<usize> = columns
        .iter()
        .map(|c| c.min_width.max(c.header.chars().count()))
        .collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.as_ref()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    if let Some(limit) = width {
        narrow(&mut widths, columns, indent.chars().count(), limit);
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
    let last = columns.len().saturating_sub(1);
    for row in rows {
        let mut cells: Vec<String> = row
            .as_ref()
            .iter()
            .zip(columns.iter().zip(&widths))
            .map(|(cell, (col, &w))| clip_cell(cell, w, col.shrink))
            .collect();
        let more = match (columns.get(last), cells.get_mut(last)) {
            (Some(col), Some(cell)) if col.shrink == Shrink::Wrap && !col.right => {
                let mut parts = wrap(cell, widths[last]).into_iter();
                *cell = parts.next().unwrap_or_default();
                parts.collect()
            }
            _ => Vec::new(),
        };
        line(&mut cells.iter().map(String::as_str));
        for part in more {
            let blank = (0..last).map(|_| "").chain([part.as_str()]);
            line(&mut blank.into_iter());
        }
    }
    out
}

/// `text` in lines of at most `width` characters, broken between words (a longer word is cut).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let used = current.chars().count();
            let room = if used == 0 {
                width
            } else {
                width.saturating_sub(used + 1)
            };
            if word.len() <= room {
                if used > 0 {
                    current.push(' ');
                }
                current.extend(word);
                break;
            }
            if used > 0 {
                lines.push(std::mem::take(&mut current));
                continue;
            }
            lines.push(word.drain(..width).collect());
        }
    }
    if !current.is_empty() || lines.is_empty() {
        lines.push(current);
    }
    lines
}

/// Narrow the shrinkable columns until the line fits `limit` or none can give more. The last
/// column (the reason, in every table here) gives last; the others share the cut under one cap,
/// so that the widest lose first.
fn narrow(widths: &mut [usize], columns: &[Column<'_>], indent: usize, limit: usize) {
    let total = |w: &[usize]| indent + w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1);
    let natural = widths.to_vec();
    let last = columns.len().saturating_sub(1);
    let shrinkable = |i: &usize| columns[*i].shrink != Shrink::Never;
    let phases: [Vec<usize>; 2] = [
        (0..last).filter(shrinkable).collect(),
        (last..columns.len()).filter(shrinkable).collect(),
    ];
    for phase in phases {
        let mut cap = phase.iter().map(|&i| natural[i]).max().unwrap_or(0);
        while total(widths) > limit && cap > 0 {
            cap -= 1;
            for &i in &phase {
                let floor = columns[i].floor.max(columns[i].header.chars().count());
                widths[i] = natural[i].min(cap.max(floor));
            }
        }
    }
}

/// `text` in at most `width` characters, the lost ones (from its middle or its end) replaced by
/// one `…`: for values outside a table that must fit the same width.
pub fn clip(text: &str, width: usize, middle: bool) -> String {
    let shrink = if middle { Shrink::Middle } else { Shrink::End };
    clip_cell(text, width, shrink)
}

fn clip_cell(cell: &str, width: usize, shrink: Shrink) -> String {
    let n = cell.chars().count();
    if n <= width || matches!(shrink, Shrink::Never | Shrink::Wrap) || width == 0 {
        return cell.to_owned();
    }
    let keep = width - 1;
    match shrink {
        Shrink::Middle => {
            let tail = keep / 2;
            let head = keep - tail;
            let start: String = cell.chars().take(head).collect();
            let end: String = cell.chars().skip(n - tail).collect();
            format!("{start}…{end}")
        }
        _ => format!("{}…", cell.chars().take(keep).collect::<String>()),
    }
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

    #[test]
    fn a_wrapping_last_column_goes_on_over_the_next_lines() {
        let rows = vec![vec![
            "web".to_string(),
            "required node affinity: label beamline In [bl45p], node has no label".to_string(),
        ]];
        let cols = [Column::left("NAME"), Column::left("WHY").wraps()];
        assert_eq!(
            table_within("", &cols, &rows, Some(30)),
            "NAME  WHY\n\
             web   required node affinity:\n\
            \x20     label beamline In\n\
            \x20     [bl45p], node has no\n\
            \x20     label\n"
        );
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
    }

    #[test]
    fn a_table_fits_its_width_by_clipping_the_shrinkable_columns() {
        let long = "x".repeat(80);
        let rows = vec![vec![
            format!("registry.example/{long}:v1"),
            "offline_safe".to_string(),
            format!("because {long}"),
        ]];
        let cols = [
            Column::left("IMAGE").shrinks_in_the_middle(),
            Column::left("READINESS"),
            Column::left("WHY").shrinks(),
        ];
        let fitted = table_within("", &cols, &rows, Some(60));
        for line in fitted.lines() {
            assert!(line.chars().count() <= 60, "{line:?}");
        }
        let row = fitted.lines().nth(1).unwrap();
        assert!(
            row.starts_with("registry.e…xxxxxx:v1  offline_safe  because"),
            "{row}"
        );
        assert!(row.ends_with('…'), "{row}");
        // Unlimited, every cell is whole; short rows are never clipped.
        assert_eq!(
            table_within("", &cols, &rows, None),
            table("", &cols, &rows)
        );
        assert!(table("", &cols, &rows).contains(&long));
        let short = vec![vec!["a".to_string(), "b".into(), "c".into()]];
        assert_eq!(
            table_within("", &cols, &short, Some(20)),
            "IMAGE  READINESS  WHY\na      b          c\n"
        );
    }
}
