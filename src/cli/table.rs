//! Plain-text tables for a terminal: each column as wide as its widest cell (measured in
//! characters, so a long account name or DC URL never pushes the columns after it out of
//! line), two spaces between columns, the last column unpadded. And the line under a listing
//! that stops before the end.

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

pub(crate) struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// One row, a cell per column.
    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The header and the rows, each line ending in a newline.
    pub(super) fn render(&self) -> String {
        let headers: Vec<String> = self.columns.iter().map(|(h, _)| (*h).to_owned()).collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                std::iter::once(&headers)
                    .chain(&self.rows)
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&headers).chain(&self.rows) {
            out.push_str(&self.line(row, &widths));
            out.push('\n');
        }
        out
    }

    fn line(&self, row: &[String], widths: &[usize]) -> String {
        let last = self.columns.len().saturating_sub(1);
        let cells = self.columns.iter().enumerate().map(|(i, (_, align))| {
            let cell = row.get(i).map_or("", String::as_str);
            let pad = " ".repeat(widths[i].saturating_sub(cell.chars().count()));
            match align {
                Align::Right => format!("{pad}{cell}"),
                Align::Left if i == last => cell.to_owned(),
                Align::Left => format!("{cell}{pad}"),
            }
        });
        cells.collect::<Vec<_>>().join("  ")
    }
}

/// Under a listing that showed rows up to `shown_through` of `total`: how many more there
/// are and how to see them; `None` when it showed the last one.
pub(super) fn more(shown_through: i64, total: i64, how: &str) -> Option<String> {
    let rest = total - shown_through;
    (rest > 0).then(|| format!("… {rest} more; {how}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_length_of_a_cell() {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("N", Align::Right),
            ("DETAIL", Align::Left),
        ]);
        t.row(vec!["a".into(), "7".into(), "x".into()]);
        t.row(vec!["jürgen.o'brien-long".into(), "12".into(), "y".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAME                  N  DETAIL");
        assert_eq!(lines[1], "a                     7  x");
        assert_eq!(lines[2], "jürgen.o'brien-long  12  y");
    }

    #[test]
    fn more_says_how_many_are_left() {
        assert_eq!(
            more(50, 280, "use --page 2").as_deref(),
            Some("… 230 more; use --page 2")
        );
        assert_eq!(more(280, 280, "-"), None);
    }
}
