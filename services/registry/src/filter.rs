//! Parser for the MLflow-style run-search filter language and `order_by` clauses.
//!
//! A filter is a list of comparisons joined by `AND`, for example
//! `metrics.rmse < 8.5 and params.model LIKE 'lin%' and attributes.status = "FINISHED"`.
//! Every identifier carries an entity prefix (`metrics.`, `params.`, `tags.` or
//! `attributes.`, plus a few aliases), and each entity only accepts the operators
//! and value types that make sense for it. All of that is checked while parsing,
//! so a successfully parsed [`Filter`] can be evaluated without further validation.
//!
//! Errors carry a 0-based character offset into the input and render as
//! `at column N: message` with a 1-based column.

use std::fmt;

/// Attributes that hold text and compare with quoted strings.
pub const STRING_ATTRIBUTES: [&str; 5] = ["run_id", "run_name", "status", "artifact_uri", "user_id"];

/// Attributes that hold epoch milliseconds and compare with numbers.
pub const NUMERIC_ATTRIBUTES: [&str; 2] = ["start_time", "end_time"];

/// The run statuses accepted by `attributes.status` (case-sensitive, like `MLflow`).
pub const RUN_STATUSES: [&str; 5] = ["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"];

/// A parsed filter: every clause must hold for a run to match.
///
/// An empty filter (no clauses) matches every run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    /// The clauses in input order, implicitly joined by `AND`.
    pub clauses: Vec<Clause>,
}

/// One comparison such as `metrics.rmse < 8.5`.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    /// What kind of run field the key refers to.
    pub entity: Entity,
    /// The key without its entity prefix and without quotes, e.g. `rmse` or `val rmse`.
    pub key: String,
    /// The comparison operator.
    pub op: Op,
    /// The right-hand side; its variant always matches the entity and operator.
    pub value: Value,
    /// 0-based character offset of the clause's identifier in the input.
    pub position: usize,
}

/// The kind of run field an identifier refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entity {
    /// A logged metric (`metrics.` / `metric.`); compares with numbers.
    Metric,
    /// A run parameter (`params.` / `param.` / `parameter.` / `parameters.`); compares with strings.
    Param,
    /// A run tag (`tags.` / `tag.`); compares with strings.
    Tag,
    /// A built-in run attribute (`attributes.` / `attribute.` / `attr.` / `run.`).
    Attribute,
}

impl Entity {
    /// The canonical prefix of this entity: "metrics", "params", "tags" or "attributes".
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Entity::Metric => "metrics",
            Entity::Param => "params",
            Entity::Tag => "tags",
            Entity::Attribute => "attributes",
        }
    }

    /// Resolves a prefix (case-insensitive, aliases included) to its entity.
    fn from_prefix(prefix: &str) -> Option<Entity> {
        match prefix.to_ascii_lowercase().as_str() {
            "metrics" | "metric" => Some(Entity::Metric),
            "params" | "param" | "parameter" | "parameters" => Some(Entity::Param),
            "tags" | "tag" => Some(Entity::Tag),
            "attributes" | "attribute" | "attr" | "run" => Some(Entity::Attribute),
            _ => None,
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `LIKE` (case-sensitive SQL pattern with `%` and `_`).
    Like,
    /// `ILIKE` (case-insensitive SQL pattern with `%` and `_`).
    ILike,
    /// `IN (...)`
    In,
    /// `NOT IN (...)`
    NotIn,
}

impl Op {
    /// The operator as written in a filter, e.g. "<=", "LIKE" or "NOT IN".
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Like => "LIKE",
            Op::ILike => "ILIKE",
            Op::In => "IN",
            Op::NotIn => "NOT IN",
        }
    }
}

/// The right-hand side of a clause.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A finite number (metrics and numeric attributes).
    Number(f64),
    /// A string with quotes removed and escapes resolved.
    Text(String),
    /// The non-empty list of strings of an `IN` / `NOT IN` clause.
    List(Vec<String>),
}

/// One parsed `order_by` clause such as `metrics.rmse DESC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    /// What kind of run field to sort by.
    pub entity: Entity,
    /// The key without its entity prefix and without quotes.
    pub key: String,
    /// True for `DESC`; the default is ascending.
    pub descending: bool,
}

/// A parse or validation error with the position where it was detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// 0-based character offset into the input.
    pub position: usize,
    /// Lowercase, human-readable description of what was expected and found.
    pub message: String,
}

impl FilterError {
    fn at(position: usize, message: impl Into<String>) -> Self {
        FilterError { position, message: message.into() }
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at column {}: {}", self.position.saturating_add(1), self.message)
    }
}

impl std::error::Error for FilterError {}

/// Parses a run-search filter such as `metrics.rmse < 8.5 and tags.team = 'x'`.
///
/// An empty or whitespace-only filter yields zero clauses.
///
/// # Errors
///
/// Returns a [`FilterError`] at the first syntax error or rule violation: a missing or
/// unknown entity prefix, an unknown attribute, an operator or value type the entity does
/// not support, an unknown run status, `OR`, an unterminated string, an empty `IN` list,
/// a missing value or trailing input.
pub fn parse_filter(text: &str) -> Result<Filter, FilterError> {
    let mut parser = Parser::new(text);
    let mut clauses = Vec::new();
    parser.skip_whitespace();
    if parser.at_end() {
        return Ok(Filter { clauses });
    }
    loop {
        clauses.push(parser.parse_clause()?);
        parser.skip_whitespace();
        if parser.at_end() {
            return Ok(Filter { clauses });
        }
        parser.expect_and()?;
        parser.skip_whitespace();
        if parser.at_end() {
            return Err(FilterError::at(
                parser.pos,
                "expected a clause such as metrics.rmse < 1 after and, found end of input",
            ));
        }
    }
}

/// Parses one `order_by` clause: an identifier optionally followed by `ASC` or `DESC`
/// (case-insensitive). The default direction is ascending.
///
/// # Errors
///
/// Returns a [`FilterError`] for empty input, an invalid identifier (missing or unknown
/// prefix, unknown attribute), a direction other than `ASC`/`DESC`, or trailing input.
pub fn parse_order_by(text: &str) -> Result<OrderBy, FilterError> {
    let mut parser = Parser::new(text);
    parser.skip_whitespace();
    if parser.at_end() {
        return Err(FilterError::at(
            parser.pos,
            "expected an order_by clause such as metrics.rmse DESC, found end of input",
        ));
    }
    let identifier = parser.parse_identifier()?;
    parser.skip_whitespace();
    if parser.at_end() {
        return Ok(OrderBy { entity: identifier.entity, key: identifier.key, descending: false });
    }
    let direction_pos = parser.pos;
    let direction_end = scan_while(&parser.chars, direction_pos, is_word_char);
    let direction = text_between(&parser.chars, direction_pos, direction_end);
    let descending = if direction.eq_ignore_ascii_case("asc") {
        false
    } else if direction.eq_ignore_ascii_case("desc") {
        true
    } else {
        return Err(FilterError::at(
            direction_pos,
            format!("expected ASC or DESC after the key, found {}", parser.describe(direction_pos)),
        ));
    };
    parser.pos = direction_end;
    parser.skip_whitespace();
    if !parser.at_end() {
        return Err(FilterError::at(
            parser.pos,
            format!("expected end of input after the order_by clause, found {}", parser.describe(parser.pos)),
        ));
    }
    Ok(OrderBy { entity: identifier.entity, key: identifier.key, descending })
}

/// Whether a clause's right-hand side is numeric or textual.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    Numeric,
    Textual,
}

/// An identifier such as `metrics.rmse` after validation.
struct Identifier {
    entity: Entity,
    key: String,
}

const NUMERIC_OPS: [Op; 6] = [Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge];
const TEXT_OPS: [Op; 6] = [Op::Eq, Op::Ne, Op::Like, Op::ILike, Op::In, Op::NotIn];
const ALL_OPS_TEXT: &str = "=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN";
const MAX_DESCRIBED_CHARS: usize = 40;

fn value_kind(entity: Entity, key: &str) -> ValueKind {
    let numeric = entity == Entity::Metric || (entity == Entity::Attribute && NUMERIC_ATTRIBUTES.contains(&key));
    if numeric {
        return ValueKind::Numeric;
    }
    ValueKind::Textual
}

/// How a clause's left-hand side is named in messages, e.g. "metrics" or "attributes.status".
fn subject(entity: Entity, key: &str) -> String {
    match entity {
        Entity::Attribute => format!("attributes.{key}"),
        other => other.as_str().to_string(),
    }
}

/// The subject with a verb agreeing in number: "metrics compare" / "attributes.status compares".
fn subject_compares(entity: Entity, key: &str) -> String {
    match entity {
        Entity::Attribute => format!("attributes.{key} compares"),
        other => format!("{} compare", other.as_str()),
    }
}

fn join_ops(ops: &[Op]) -> String {
    ops.iter().map(Op::as_str).collect::<Vec<_>>().join(", ")
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_operator_char(c: char) -> bool {
    matches!(c, '=' | '!' | '<' | '>')
}

fn is_quote(c: char) -> bool {
    c == '\'' || c == '"'
}

/// Returns the first index at or after `start` whose char does not satisfy `predicate`.
fn scan_while(chars: &[char], start: usize, predicate: impl Fn(char) -> bool) -> usize {
    let mut index = start;
    while chars.get(index).is_some_and(|&c| predicate(c)) {
        index += 1;
    }
    index
}

fn text_between(chars: &[char], start: usize, end: usize) -> String {
    chars.get(start..end).map(|slice| slice.iter().collect()).unwrap_or_default()
}

/// Scans a quoted string whose opening quote is at `start`.
///
/// Backslash escapes `\'`, `\"`, `\\` and `` \` `` yield the escaped character (any other
/// backslash sequence is kept verbatim), and a doubled quote (`'it''s'`) yields one quote.
/// Returns the unquoted content and the index after the closing quote, or `None` when the
/// string is unterminated.
fn scan_quoted(chars: &[char], start: usize) -> Option<(String, usize)> {
    let quote = *chars.get(start)?;
    let mut content = String::new();
    let mut index = start + 1;
    loop {
        let c = *chars.get(index)?;
        if c == '\\' {
            let escaped = *chars.get(index + 1)?;
            if !matches!(escaped, '\'' | '"' | '\\' | '`') {
                content.push('\\');
            }
            content.push(escaped);
            index += 2;
            continue;
        }
        if c == quote {
            if chars.get(index + 1) == Some(&quote) {
                content.push(quote);
                index += 2;
                continue;
            }
            return Some((content, index + 1));
        }
        content.push(c);
        index += 1;
    }
}

/// Scans a numeric literal (`8`, `-1.5`, `1e-3`, `.5`, `+2`) starting at `start`.
/// Returns the index after it, or `None` if there is no digit in the mantissa.
fn scan_number(chars: &[char], start: usize) -> Option<usize> {
    let is_digit = |c: char| c.is_ascii_digit();
    let mut index = start;
    if matches!(chars.get(index), Some('+' | '-')) {
        index += 1;
    }
    let integer_end = scan_while(chars, index, is_digit);
    let mut digit_count = integer_end - index;
    index = integer_end;
    if chars.get(index) == Some(&'.') {
        let fraction_end = scan_while(chars, index + 1, is_digit);
        digit_count += fraction_end - (index + 1);
        index = fraction_end;
    }
    if digit_count == 0 {
        return None;
    }
    if matches!(chars.get(index), Some('e' | 'E')) {
        let mut exponent_start = index + 1;
        if matches!(chars.get(exponent_start), Some('+' | '-')) {
            exponent_start += 1;
        }
        let exponent_end = scan_while(chars, exponent_start, is_digit);
        if exponent_end > exponent_start {
            index = exponent_end;
        }
    }
    Some(index)
}

/// Scans a complete number: a numeric literal not immediately followed by a word char or dot.
fn scan_complete_number(chars: &[char], start: usize) -> Option<usize> {
    let end = scan_number(chars, start)?;
    match chars.get(end) {
        Some(&c) if is_word_char(c) || c == '.' => None,
        _ => Some(end),
    }
}

/// Shortens text shown back to the user so messages stay on one terminal line.
fn clip(text: &str) -> String {
    if text.chars().count() <= MAX_DESCRIBED_CHARS {
        return text.to_string();
    }
    let mut clipped: String = text.chars().take(MAX_DESCRIBED_CHARS).collect();
    clipped.push('…');
    clipped
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn new(text: &str) -> Self {
        Parser { chars: text.chars().collect(), pos: 0 }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn skip_whitespace(&mut self) {
        self.pos = scan_while(&self.chars, self.pos, char::is_whitespace);
    }

    /// Describes the token starting at `pos` for "found ..." parts of messages.
    fn describe(&self, pos: usize) -> String {
        let chars = &self.chars;
        let Some(first) = chars.get(pos).copied() else {
            return "end of input".to_string();
        };
        if is_quote(first) {
            return match scan_quoted(chars, pos) {
                Some((content, _)) => format!("the string \"{}\"", clip(&content)),
                None => "an unterminated string".to_string(),
            };
        }
        if first == '`' {
            return match scan_quoted(chars, pos) {
                Some((content, _)) => format!("the quoted name `{}`", clip(&content)),
                None => "an unterminated quoted name".to_string(),
            };
        }
        if let Some(end) = scan_complete_number(chars, pos) {
            return format!("the number {}", clip(&text_between(chars, pos, end)));
        }
        let is_wordish = |c: char| is_word_char(c) || c == '.';
        if is_wordish(first) || (matches!(first, '+' | '-') && chars.get(pos + 1).is_some_and(|&c| is_wordish(c))) {
            let end = scan_while(chars, pos + 1, is_wordish);
            return format!("\"{}\"", clip(&text_between(chars, pos, end)));
        }
        if is_operator_char(first) {
            let end = scan_while(chars, pos, is_operator_char);
            return format!("\"{}\"", clip(&text_between(chars, pos, end)));
        }
        format!("\"{first}\"")
    }

    /// Consumes the `and` between clauses, reporting `or` and anything else as errors.
    fn expect_and(&mut self) -> Result<(), FilterError> {
        let start = self.pos;
        let end = scan_while(&self.chars, start, is_word_char);
        let word = text_between(&self.chars, start, end);
        if word.eq_ignore_ascii_case("and") {
            self.pos = end;
            return Ok(());
        }
        if word.eq_ignore_ascii_case("or") {
            return Err(FilterError::at(start, "or is not supported; combine clauses with and"));
        }
        Err(FilterError::at(start, format!("expected and between clauses, found {}", self.describe(start))))
    }

    /// Parses `prefix.key`, where the key is a dotted word, a backtick-quoted or a
    /// double-quoted name. Attribute keys are checked against the known attributes.
    fn parse_identifier(&mut self) -> Result<Identifier, FilterError> {
        let start = self.pos;
        let prefix_end = scan_while(&self.chars, start, is_word_char);
        if prefix_end == start {
            return Err(FilterError::at(
                start,
                format!("expected an identifier such as metrics.rmse, found {}", self.describe(start)),
            ));
        }
        let prefix = text_between(&self.chars, start, prefix_end);
        let has_dot = self.chars.get(prefix_end) == Some(&'.');
        let Some(entity) = Entity::from_prefix(&prefix) else {
            if has_dot {
                return Err(FilterError::at(
                    start,
                    format!("unknown entity prefix \"{}\"; use metrics, params, tags or attributes", clip(&prefix)),
                ));
            }
            let shown = clip(&prefix);
            return Err(FilterError::at(
                start,
                format!(
                    "\"{shown}\" has no entity prefix; use metrics., params., tags. or attributes. (for example metrics.{shown})"
                ),
            ));
        };
        if !has_dot {
            return Err(FilterError::at(
                prefix_end,
                format!("expected \".\" and a key after \"{prefix}\", found {}", self.describe(prefix_end)),
            ));
        }
        let key_pos = prefix_end + 1;
        let key = match self.chars.get(key_pos).copied() {
            Some(quote @ ('`' | '"')) => {
                let Some((key, end)) = scan_quoted(&self.chars, key_pos) else {
                    return Err(FilterError::at(key_pos, format!("unterminated quoted key; add a closing {quote}")));
                };
                self.pos = end;
                key
            }
            Some(c) if is_word_char(c) => {
                let mut end = scan_while(&self.chars, key_pos, is_word_char);
                while self.chars.get(end) == Some(&'.') && self.chars.get(end + 1).is_some_and(|&c| is_word_char(c)) {
                    end = scan_while(&self.chars, end + 1, is_word_char);
                }
                self.pos = end;
                text_between(&self.chars, key_pos, end)
            }
            _ => {
                return Err(FilterError::at(
                    key_pos,
                    format!("expected a key after \"{prefix}.\", found {}", self.describe(key_pos)),
                ));
            }
        };
        if key.is_empty() {
            return Err(FilterError::at(key_pos, "the key must not be empty"));
        }
        if entity == Entity::Attribute
            && !STRING_ATTRIBUTES.contains(&key.as_str())
            && !NUMERIC_ATTRIBUTES.contains(&key.as_str())
        {
            let known =
                STRING_ATTRIBUTES.iter().chain(NUMERIC_ATTRIBUTES.iter()).copied().collect::<Vec<_>>().join(", ");
            return Err(FilterError::at(
                key_pos,
                format!("unknown attribute \"{}\"; known attributes are {known}", clip(&key)),
            ));
        }
        Ok(Identifier { entity, key })
    }

    fn expected_operator(&self, pos: usize) -> FilterError {
        FilterError::at(pos, format!("expected a comparison operator ({ALL_OPS_TEXT}), found {}", self.describe(pos)))
    }

    fn parse_operator(&mut self) -> Result<Op, FilterError> {
        let start = self.pos;
        match self.peek() {
            Some(c) if is_operator_char(c) => {
                let end = scan_while(&self.chars, start, is_operator_char);
                let op = match text_between(&self.chars, start, end).as_str() {
                    "=" => Op::Eq,
                    "!=" => Op::Ne,
                    "<" => Op::Lt,
                    "<=" => Op::Le,
                    ">" => Op::Gt,
                    ">=" => Op::Ge,
                    _ => return Err(self.expected_operator(start)),
                };
                self.pos = end;
                Ok(op)
            }
            Some(c) if is_word_char(c) => {
                let end = scan_while(&self.chars, start, is_word_char);
                let op = match text_between(&self.chars, start, end).to_ascii_uppercase().as_str() {
                    "LIKE" => Op::Like,
                    "ILIKE" => Op::ILike,
                    "IN" => Op::In,
                    "NOT" => {
                        self.pos = end;
                        self.skip_whitespace();
                        let in_pos = self.pos;
                        let in_end = scan_while(&self.chars, in_pos, is_word_char);
                        if !text_between(&self.chars, in_pos, in_end).eq_ignore_ascii_case("in") {
                            return Err(FilterError::at(
                                in_pos,
                                format!("expected IN after NOT, found {}", self.describe(in_pos)),
                            ));
                        }
                        self.pos = in_end;
                        return Ok(Op::NotIn);
                    }
                    _ => return Err(self.expected_operator(start)),
                };
                self.pos = end;
                Ok(op)
            }
            _ => Err(self.expected_operator(start)),
        }
    }

    fn parse_clause(&mut self) -> Result<Clause, FilterError> {
        let position = self.pos;
        let Identifier { entity, key } = self.parse_identifier()?;
        let kind = value_kind(entity, &key);
        self.skip_whitespace();
        let op_pos = self.pos;
        let op = self.parse_operator()?;
        let allowed_ops: &[Op] = match kind {
            ValueKind::Numeric => &NUMERIC_OPS,
            ValueKind::Textual => &TEXT_OPS,
        };
        if !allowed_ops.contains(&op) {
            return Err(FilterError::at(
                op_pos,
                format!(
                    "operator {} is not supported for {}; use one of {}",
                    op.as_str(),
                    subject(entity, &key),
                    join_ops(allowed_ops)
                ),
            ));
        }
        self.skip_whitespace();
        let (value, value_positions) = if matches!(op, Op::In | Op::NotIn) {
            let items = self.parse_list(op)?;
            let positions: Vec<usize> = items.iter().map(|(_, pos)| *pos).collect();
            let texts = items.into_iter().map(|(text, _)| text).collect();
            (Value::List(texts), positions)
        } else {
            let value_pos = self.pos;
            (self.parse_scalar(entity, &key, kind, op)?, vec![value_pos])
        };
        if entity == Entity::Attribute && key == "status" && !matches!(op, Op::Like | Op::ILike) {
            check_statuses(&value, &value_positions)?;
        }
        Ok(Clause { entity, key, op, value, position })
    }

    fn parse_scalar(&mut self, entity: Entity, key: &str, kind: ValueKind, op: Op) -> Result<Value, FilterError> {
        let start = self.pos;
        let first = self.peek();
        if let Some(quote) = first.filter(|&c| is_quote(c)) {
            let Some((text, end)) = scan_quoted(&self.chars, start) else {
                return Err(FilterError::at(start, format!("unterminated string; add a closing {quote}")));
            };
            if kind == ValueKind::Numeric {
                return Err(FilterError::at(
                    start,
                    format!("{} with numbers, found the string \"{}\"", subject_compares(entity, key), clip(&text)),
                ));
            }
            self.pos = end;
            return Ok(Value::Text(text));
        }
        if let Some(end) = scan_complete_number(&self.chars, start) {
            let raw = text_between(&self.chars, start, end);
            if kind == ValueKind::Textual {
                return Err(FilterError::at(
                    start,
                    format!(
                        "{} with quoted strings, found the number {raw}; quote it, e.g. '{raw}'",
                        subject_compares(entity, key)
                    ),
                ));
            }
            let number = match raw.parse::<f64>() {
                Ok(number) if number.is_finite() => number,
                _ => {
                    return Err(FilterError::at(start, format!("number {} is out of range", clip(&raw))));
                }
            };
            self.pos = end;
            return Ok(Value::Number(number));
        }
        let expected = match kind {
            ValueKind::Numeric => "a number",
            ValueKind::Textual => "a quoted string",
        };
        let mut message = format!("expected {expected} after {}, found {}", op.as_str(), self.describe(start));
        if kind == ValueKind::Textual && first.is_some_and(is_word_char) {
            let end = scan_while(&self.chars, start, is_word_char);
            message.push_str("; quote it, e.g. '");
            message.push_str(&clip(&text_between(&self.chars, start, end)));
            message.push('\'');
        }
        Err(FilterError::at(start, message))
    }

    /// Parses `( 'a', "b", ... )` and returns each item with its position.
    fn parse_list(&mut self, op: Op) -> Result<Vec<(String, usize)>, FilterError> {
        let open = self.pos;
        if self.peek() != Some('(') {
            return Err(FilterError::at(
                open,
                format!("expected ( to start the {} list, found {}", op.as_str(), self.describe(open)),
            ));
        }
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_whitespace();
            let item_pos = self.pos;
            match self.peek() {
                Some(')') if items.is_empty() => {
                    return Err(FilterError::at(item_pos, format!("the {} list must not be empty", op.as_str())));
                }
                Some(quote) if is_quote(quote) => {
                    let Some((text, end)) = scan_quoted(&self.chars, item_pos) else {
                        return Err(FilterError::at(item_pos, format!("unterminated string; add a closing {quote}")));
                    };
                    self.pos = end;
                    items.push((text, item_pos));
                }
                _ => {
                    return Err(FilterError::at(
                        item_pos,
                        format!("{} list items must be quoted strings, found {}", op.as_str(), self.describe(item_pos)),
                    ));
                }
            }
            self.skip_whitespace();
            let separator_pos = self.pos;
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => {
                    return Err(FilterError::at(
                        separator_pos,
                        format!("expected , or ) in the {} list, found {}", op.as_str(), self.describe(separator_pos)),
                    ));
                }
            }
        }
    }
}

/// Checks that every status compared by `=`, `!=`, `IN` or `NOT IN` is a known run status.
fn check_statuses(value: &Value, positions: &[usize]) -> Result<(), FilterError> {
    let statuses: Vec<&str> = match value {
        Value::Text(text) => vec![text.as_str()],
        Value::List(items) => items.iter().map(String::as_str).collect(),
        Value::Number(_) => Vec::new(),
    };
    for (index, status) in statuses.iter().enumerate() {
        if RUN_STATUSES.contains(status) {
            continue;
        }
        let position = positions.get(index).copied().unwrap_or_default();
        let mut message = format!("status must be one of {}, found \"{}\"", RUN_STATUSES.join(", "), clip(status));
        let upper = status.to_ascii_uppercase();
        if RUN_STATUSES.contains(&upper.as_str()) {
            message.push_str("; statuses are upper-case, did you mean \"");
            message.push_str(&upper);
            message.push_str("\"?");
        }
        return Err(FilterError::at(position, message));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clause(entity: Entity, key: &str, op: Op, value: Value, position: usize) -> Clause {
        Clause { entity, key: key.to_string(), op, value, position }
    }

    fn text(value: &str) -> Value {
        Value::Text(value.to_string())
    }

    fn list(values: &[&str]) -> Value {
        Value::List(values.iter().map(|v| v.to_string()).collect())
    }

    fn parse_ok(input: &str) -> Vec<Clause> {
        match parse_filter(input) {
            Ok(filter) => filter.clauses,
            Err(error) => panic!("expected {input:?} to parse, got {error}"),
        }
    }

    fn parse_err(input: &str) -> FilterError {
        match parse_filter(input) {
            Ok(filter) => panic!("expected {input:?} to fail, got {filter:?}"),
            Err(error) => error,
        }
    }

    /// Asserts the error position and that the message contains every fragment.
    fn assert_error(input: &str, position: usize, fragments: &[&str]) {
        let error = parse_err(input);
        assert_eq!(error.position, position, "position for {input:?}: {error}");
        for fragment in fragments {
            assert!(
                error.message.contains(fragment),
                "message for {input:?} should contain {fragment:?}: {}",
                error.message
            );
        }
    }

    fn assert_order_error(input: &str, position: usize, fragments: &[&str]) {
        let error = match parse_order_by(input) {
            Ok(order) => panic!("expected order_by {input:?} to fail, got {order:?}"),
            Err(error) => error,
        };
        assert_eq!(error.position, position, "position for {input:?}: {error}");
        for fragment in fragments {
            assert!(error.message.contains(fragment), "{:?} lacks {fragment:?}", error.message);
        }
    }

    #[test]
    fn parses_the_full_example_with_every_entity() {
        let input = r#"metrics.rmse < 8.5 and params.features = "PU,DO" and tags.team = 'x' and attributes.status = "FINISHED""#;
        assert_eq!(
            parse_ok(input),
            vec![
                clause(Entity::Metric, "rmse", Op::Lt, Value::Number(8.5), 0),
                clause(Entity::Param, "features", Op::Eq, text("PU,DO"), 23),
                clause(Entity::Tag, "team", Op::Eq, text("x"), 53),
                clause(Entity::Attribute, "status", Op::Eq, text("FINISHED"), 73),
            ]
        );
    }

    #[test]
    fn and_is_case_insensitive() {
        let expected = vec![
            clause(Entity::Metric, "rmse", Op::Le, Value::Number(8.5), 0),
            clause(Entity::Metric, "r2", Op::Gt, Value::Number(0.3), 24),
        ];
        assert_eq!(parse_ok("metrics.rmse <= 8.5 AND metrics.r2 > 0.3"), expected);
        assert_eq!(parse_ok("metrics.rmse <= 8.5 aNd metrics.r2 > 0.3"), expected);
        assert_eq!(parse_ok("metrics.rmse<=8.5 and\n\tmetrics.r2>0.3").len(), 2);
    }

    #[test]
    fn parses_like_and_ilike() {
        assert_eq!(
            parse_ok("params.model LIKE 'lin%'"),
            vec![clause(Entity::Param, "model", Op::Like, text("lin%"), 0)]
        );
        assert_eq!(
            parse_ok("tags.owner ILIKE '%ann%'"),
            vec![clause(Entity::Tag, "owner", Op::ILike, text("%ann%"), 0)]
        );
        assert_eq!(parse_ok("params.model like 'x'")[0].op, Op::Like);
        assert_eq!(parse_ok("attributes.status LIKE 'FIN%'")[0].op, Op::Like);
    }

    #[test]
    fn parses_in_and_not_in() {
        assert_eq!(
            parse_ok("attributes.status IN ('FINISHED', 'RUNNING')"),
            vec![clause(Entity::Attribute, "status", Op::In, list(&["FINISHED", "RUNNING"]), 0)]
        );
        assert_eq!(
            parse_ok(r#"attributes.run_name NOT IN ("a", "b")"#),
            vec![clause(Entity::Attribute, "run_name", Op::NotIn, list(&["a", "b"]), 0)]
        );
        assert_eq!(parse_ok("params.x not   in('a')"), vec![clause(Entity::Param, "x", Op::NotIn, list(&["a"]), 0)]);
        assert_eq!(parse_ok("tags.t in ( 'a' ,\"b\" , 'c' )")[0].value, list(&["a", "b", "c"]));
    }

    #[test]
    fn parses_quoted_keys() {
        let expected = vec![clause(Entity::Metric, "val rmse", Op::Gt, Value::Number(1.0), 0)];
        assert_eq!(parse_ok("metrics.`val rmse` > 1"), expected);
        assert_eq!(parse_ok(r#"metrics."val rmse" > 1"#), expected);
        assert_eq!(parse_ok("params.`a.b c` = 'v'")[0].key, "a.b c");
        assert_eq!(parse_ok("tags.`mlflow.runName` = 'v'")[0].key, "mlflow.runName");
    }

    #[test]
    fn parses_dotted_unquoted_keys() {
        assert_eq!(
            parse_ok("tags.mlflow.user = 'ann'"),
            vec![clause(Entity::Tag, "mlflow.user", Op::Eq, text("ann"), 0)]
        );
    }

    #[test]
    fn parses_numeric_attributes_and_run_alias() {
        assert_eq!(
            parse_ok("attributes.start_time >= 1700000000000"),
            vec![clause(Entity::Attribute, "start_time", Op::Ge, Value::Number(1_700_000_000_000.0), 0)]
        );
        assert_eq!(
            parse_ok("run.status = 'FAILED'"),
            vec![clause(Entity::Attribute, "status", Op::Eq, text("FAILED"), 0)]
        );
        assert_eq!(parse_ok("attr.end_time != 5")[0].op, Op::Ne);
    }

    #[test]
    fn empty_and_whitespace_filters_have_no_clauses() {
        assert_eq!(parse_filter(""), Ok(Filter { clauses: vec![] }));
        assert_eq!(parse_filter("   \t\n "), Ok(Filter::default()));
    }

    #[test]
    fn parses_number_forms() {
        let cases = [
            ("8", 8.0),
            ("-1.5", -1.5),
            ("1e-3", 0.001),
            (".5", 0.5),
            ("+2", 2.0),
            ("5.", 5.0),
            ("2E+2", 200.0),
            ("-.25", -0.25),
        ];
        for (literal, expected) in cases {
            let clauses = parse_ok(&format!("metrics.m = {literal}"));
            assert_eq!(clauses[0].value, Value::Number(expected), "literal {literal}");
        }
    }

    #[test]
    fn resolves_every_entity_alias_case_insensitively() {
        let cases = [
            ("metrics.k < 1", Entity::Metric),
            ("metric.k < 1", Entity::Metric),
            ("METRICS.k < 1", Entity::Metric),
            ("params.k = 'v'", Entity::Param),
            ("param.k = 'v'", Entity::Param),
            ("parameter.k = 'v'", Entity::Param),
            ("Parameters.k = 'v'", Entity::Param),
            ("tags.k = 'v'", Entity::Tag),
            ("TAG.k = 'v'", Entity::Tag),
            ("attributes.run_id = 'v'", Entity::Attribute),
            ("attribute.run_id = 'v'", Entity::Attribute),
            ("attr.run_id = 'v'", Entity::Attribute),
            ("Run.run_id = 'v'", Entity::Attribute),
        ];
        for (input, entity) in cases {
            assert_eq!(parse_ok(input)[0].entity, entity, "{input}");
        }
    }

    #[test]
    fn resolves_string_escapes() {
        assert_eq!(parse_ok(r"tags.t = 'it\'s'")[0].value, text("it's"));
        assert_eq!(parse_ok(r#"tags.t = "say \"hi\"""#)[0].value, text("say \"hi\""));
        assert_eq!(parse_ok(r"tags.t = 'a\\b'")[0].value, text(r"a\b"));
        assert_eq!(parse_ok(r"tags.t = 'a\nb'")[0].value, text(r"a\nb"));
        assert_eq!(parse_ok("tags.t = 'it''s'")[0].value, text("it's"));
        assert_eq!(parse_ok("tags.t = ''")[0].value, text(""));
        assert_eq!(parse_ok("tags.t = 'héllo wörld'")[0].value, text("héllo wörld"));
    }

    #[test]
    fn accepts_every_attribute_and_status() {
        for key in STRING_ATTRIBUTES {
            let value = if key == "status" { "RUNNING" } else { "x" };
            assert_eq!(parse_ok(&format!("attributes.{key} = '{value}'"))[0].key, key);
        }
        for key in NUMERIC_ATTRIBUTES {
            assert_eq!(parse_ok(&format!("attributes.{key} < 10"))[0].value, Value::Number(10.0));
        }
        for status in RUN_STATUSES {
            assert_eq!(parse_ok(&format!("attributes.status != '{status}'"))[0].value, text(status));
        }
    }

    #[test]
    fn positions_are_char_offsets_not_bytes() {
        let clauses = parse_ok("tags.t = 'ééé' and metrics.m > 1");
        assert_eq!(clauses[1].position, 19);
        assert_error("tags.t = 'ééé' and metrics.m == 1", 29, &["\"==\""]);
    }

    #[test]
    fn rejects_missing_prefix() {
        assert_error("rmse < 1", 0, &["\"rmse\"", "no entity prefix", "metrics.", "params.", "tags.", "attributes."]);
        assert_error("metrics.a < 1 and r2 > 0", 18, &["\"r2\"", "no entity prefix"]);
        assert_error("metrics < 1", 7, &["expected \".\"", "after \"metrics\""]);
        assert_error("'x' = 1", 0, &["expected an identifier", "the string \"x\""]);
    }

    #[test]
    fn rejects_unknown_prefix() {
        assert_error(
            "metrix.rmse < 1",
            0,
            &["unknown entity prefix \"metrix\"", "metrics, params, tags or attributes"],
        );
    }

    #[test]
    fn rejects_bad_operators() {
        let error = parse_err("metrics.rmse == 1");
        assert_eq!(
            error.to_string(),
            "at column 14: expected a comparison operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN), found \"==\""
        );
        assert_error("metrics.rmse <> 1", 13, &["comparison operator", "\"<>\""]);
        assert_error("metrics.rmse 1", 13, &["comparison operator", "the number 1"]);
        assert_error("metrics.rmse", 12, &["comparison operator", "end of input"]);
        assert_error("params.p IS 'x'", 9, &["comparison operator", "\"IS\""]);
        assert_error("params.p NOT LIKE 'x'", 13, &["expected IN after NOT", "\"LIKE\""]);
        assert_error("params.p NOT", 12, &["expected IN after NOT", "end of input"]);
    }

    #[test]
    fn rejects_operators_not_allowed_for_the_entity() {
        assert_error("metrics.rmse LIKE '1%'", 13, &["LIKE", "not supported for metrics", "=, !=, <, <=, >, >="]);
        assert_error("metrics.rmse IN ('1')", 13, &["IN", "not supported for metrics"]);
        assert_error("params.lr < '1'", 10, &["operator <", "not supported for params", "LIKE, ILIKE, IN, NOT IN"]);
        assert_error("tags.t >= 'a'", 7, &["operator >=", "not supported for tags"]);
        assert_error("attributes.run_name > 'a'", 20, &["not supported for attributes.run_name"]);
        assert_error("attributes.start_time LIKE '1%'", 22, &["LIKE", "not supported for attributes.start_time"]);
        assert_error("attributes.end_time NOT IN ('1')", 20, &["NOT IN", "not supported for attributes.end_time"]);
    }

    #[test]
    fn rejects_values_of_the_wrong_type() {
        let error = parse_err("metrics.rmse != 'x'");
        assert_eq!(error.to_string(), "at column 17: metrics compare with numbers, found the string \"x\"");
        assert_error("params.lr = 0.1", 12, &["params compare with quoted strings", "the number 0.1", "'0.1'"]);
        assert_error("tags.t = 3", 9, &["tags compare with quoted strings", "the number 3"]);
        assert_error(
            "attributes.start_time > '2024'",
            24,
            &["attributes.start_time compares with numbers", "\"2024\""],
        );
        assert_error("attributes.run_id = 5", 20, &["attributes.run_id compares with quoted strings"]);
        assert_error(
            "attributes.status = FINISHED",
            20,
            &["expected a quoted string after =", "\"FINISHED\"", "quote it"],
        );
        assert_error("metrics.m < abc", 12, &["expected a number after <", "\"abc\""]);
        assert_error("metrics.m < 1e", 12, &["expected a number", "\"1e\""]);
        assert_error("metrics.m < 1.2.3", 12, &["expected a number", "\"1.2.3\""]);
        assert_error("metrics.m < -", 12, &["expected a number", "\"-\""]);
        assert_error("metrics.m < 1e999", 12, &["out of range"]);
    }

    #[test]
    fn rejects_unknown_attributes() {
        assert_error(
            "attributes.colour = 'red'",
            11,
            &["unknown attribute \"colour\"", "run_id, run_name, status, artifact_uri, user_id, start_time, end_time"],
        );
        assert_error("run.Status = 'FAILED'", 4, &["unknown attribute \"Status\""]);
    }

    #[test]
    fn rejects_unknown_statuses() {
        assert_error(
            "attributes.status = 'DONE'",
            20,
            &["status must be one of RUNNING, SCHEDULED, FINISHED, FAILED, KILLED", "\"DONE\""],
        );
        assert_error("attributes.status != 'finished'", 21, &["\"finished\"", "did you mean \"FINISHED\""]);
        assert_error("attributes.status IN ('RUNNING', 'nope')", 33, &["status must be one of", "\"nope\""]);
    }

    #[test]
    fn rejects_or_with_a_specific_message() {
        let error = parse_err("metrics.a < 1 or metrics.b > 2");
        assert_eq!(error.position, 14);
        assert_eq!(error.message, "or is not supported; combine clauses with and");
        assert_error("metrics.a < 1 OR metrics.b > 2", 14, &["or is not supported"]);
    }

    #[test]
    fn rejects_trailing_garbage_and_dangling_and() {
        assert_error("metrics.a < 1 )", 14, &["expected and between clauses", "\")\""]);
        assert_error("metrics.a < 1 metrics.b < 2", 14, &["expected and", "\"metrics.b\""]);
        assert_error("metrics.a < 1 andmetrics.b < 2", 14, &["expected and", "\"andmetrics.b\""]);
        assert_error("metrics.a < 1 and", 17, &["expected a clause", "end of input"]);
        assert_error("metrics.a < 1 and  ", 19, &["expected a clause", "end of input"]);
        assert_error("metrics.a < 1 and and metrics.b < 2", 18, &["\"and\"", "no entity prefix"]);
    }

    #[test]
    fn rejects_missing_values() {
        assert_error("metrics.a <", 11, &["expected a number after <", "end of input"]);
        assert_error("params.p = ", 11, &["expected a quoted string after =", "end of input"]);
        assert_error("params.p = and tags.t = 'x'", 11, &["expected a quoted string", "\"and\""]);
    }

    #[test]
    fn rejects_unterminated_strings_and_keys() {
        assert_error("params.p = 'abc", 11, &["unterminated string", "closing '"]);
        assert_error("params.p = \"abc\\\"", 11, &["unterminated string", "closing \""]);
        assert_error("params.p IN ('a', 'b", 18, &["unterminated string"]);
        assert_error("metrics.`val rmse > 1", 8, &["unterminated quoted key", "closing `"]);
        assert_error("metrics.\"val rmse > 1", 8, &["unterminated quoted key"]);
    }

    #[test]
    fn rejects_bad_keys() {
        assert_error("metrics. < 1", 8, &["expected a key after \"metrics.\"", "\" \""]);
        assert_error("metrics.", 8, &["expected a key", "end of input"]);
        assert_error("metrics.`` < 1", 8, &["key must not be empty"]);
        assert_error("metrics.'a' < 1", 8, &["expected a key", "the string \"a\""]);
    }

    #[test]
    fn rejects_malformed_in_lists() {
        assert_error("params.p IN ()", 13, &["IN list must not be empty"]);
        assert_error("params.p NOT IN (  )", 19, &["NOT IN list must not be empty"]);
        assert_error("params.p IN 'a'", 12, &["expected ( to start the IN list", "the string \"a\""]);
        assert_error("params.p IN ('a',)", 17, &["IN list items must be quoted strings", "\")\""]);
        assert_error("params.p IN (a)", 13, &["IN list items must be quoted strings", "\"a\""]);
        assert_error("params.p IN (1)", 13, &["quoted strings", "the number 1"]);
        assert_error("params.p IN ('a' 'b')", 17, &["expected , or ) in the IN list", "the string \"b\""]);
        assert_error("params.p IN ('a'", 16, &["expected , or )", "end of input"]);
    }

    #[test]
    fn error_display_and_error_trait() {
        let error = FilterError { position: 0, message: "boom".to_string() };
        assert_eq!(error.to_string(), "at column 1: boom");
        let boxed: Box<dyn std::error::Error> = Box::new(error.clone());
        assert_eq!(boxed.to_string(), "at column 1: boom");
    }

    #[test]
    fn messages_are_lowercase_at_the_start() {
        let inputs = ["rmse < 1", "metrics.a == 1", "metrics.a < 1 or x", "params.p IN ()", "attributes.x = 'y'"];
        for input in inputs {
            let error = parse_err(input);
            let first = error.message.chars().next();
            assert!(first.is_some_and(|c| !c.is_uppercase()), "{:?}", error.message);
        }
    }

    #[test]
    fn long_values_are_clipped_in_messages() {
        let long = "x".repeat(200);
        let error = parse_err(&format!("metrics.m = '{long}'"));
        assert!(error.message.contains('…'));
        assert!(error.message.len() < 150, "{}", error.message);
    }

    #[test]
    fn op_and_entity_names() {
        let ops = [
            (Op::Eq, "="),
            (Op::Ne, "!="),
            (Op::Lt, "<"),
            (Op::Le, "<="),
            (Op::Gt, ">"),
            (Op::Ge, ">="),
            (Op::Like, "LIKE"),
            (Op::ILike, "ILIKE"),
            (Op::In, "IN"),
            (Op::NotIn, "NOT IN"),
        ];
        for (op, name) in ops {
            assert_eq!(op.as_str(), name);
        }
        assert_eq!(Entity::Metric.as_str(), "metrics");
        assert_eq!(Entity::Param.as_str(), "params");
        assert_eq!(Entity::Tag.as_str(), "tags");
        assert_eq!(Entity::Attribute.as_str(), "attributes");
    }

    #[test]
    fn parses_order_by() {
        let order = |entity, key: &str, descending| OrderBy { entity, key: key.to_string(), descending };
        assert_eq!(parse_order_by("metrics.rmse"), Ok(order(Entity::Metric, "rmse", false)));
        assert_eq!(parse_order_by("metrics.rmse DESC"), Ok(order(Entity::Metric, "rmse", true)));
        assert_eq!(parse_order_by("attributes.start_time asc"), Ok(order(Entity::Attribute, "start_time", false)));
        assert_eq!(parse_order_by("  params.lr   Desc  "), Ok(order(Entity::Param, "lr", true)));
        assert_eq!(parse_order_by("metrics.`val rmse` desc"), Ok(order(Entity::Metric, "val rmse", true)));
        assert_eq!(parse_order_by("run.run_name"), Ok(order(Entity::Attribute, "run_name", false)));
        assert_eq!(parse_order_by("tags.mlflow.runName DESC"), Ok(order(Entity::Tag, "mlflow.runName", true)));
    }

    #[test]
    fn rejects_bad_order_by() {
        assert_order_error("", 0, &["expected an order_by clause", "end of input"]);
        assert_order_error("   ", 3, &["expected an order_by clause"]);
        assert_order_error("rmse DESC", 0, &["no entity prefix"]);
        assert_order_error("metrics.rmse sideways", 13, &["expected ASC or DESC", "\"sideways\""]);
        assert_order_error("metrics.rmse, params.lr", 12, &["expected ASC or DESC", "\",\""]);
        assert_order_error("metrics.rmse DESC x", 18, &["expected end of input", "\"x\""]);
        assert_order_error("attributes.colour DESC", 11, &["unknown attribute"]);
        let error = parse_order_by("metrics.rmse sideways").err();
        assert_eq!(
            error.map(|e| e.to_string()),
            Some("at column 14: expected ASC or DESC after the key, found \"sideways\"".to_string())
        );
    }

    const VALID_FILTERS: [&str; 10] = [
        r#"metrics.rmse < 8.5 and params.features = "PU,DO" and tags.team = 'x' and attributes.status = "FINISHED""#,
        "metrics.rmse <= 8.5 AND metrics.r2 > 0.3",
        "params.model LIKE 'lin%'",
        "tags.owner ILIKE '%ann%'",
        "attributes.status IN ('FINISHED', 'RUNNING')",
        r#"attributes.run_name NOT IN ("a", "b")"#,
        "metrics.`val rmse` > 1 and metrics.\"val rmse\" > 1",
        "attributes.start_time >= 1700000000000 and run.status = 'FAILED'",
        r"tags.t = 'it\'s ünïcode' and metrics.m = -1.5e-3",
        "metrics.a = .5 and metrics.b != 8",
    ];

    /// Checks invariants that must hold for any input, whatever the outcome.
    fn check_invariants(input: &str) {
        let length = input.chars().count();
        match parse_filter(input) {
            Ok(filter) => {
                for clause in &filter.clauses {
                    assert!(clause.position < length, "clause position out of range for {input:?}");
                    assert!(!clause.key.is_empty());
                    if let Value::Number(number) = clause.value {
                        assert!(number.is_finite());
                    }
                    if let Value::List(items) = &clause.value {
                        assert!(!items.is_empty());
                    }
                }
            }
            Err(error) => {
                assert!(error.position <= length, "error position out of range for {input:?}: {error}");
                assert!(!error.message.is_empty());
                assert!(error.to_string().starts_with("at column "));
            }
        }
        match parse_order_by(input) {
            Ok(order) => assert!(!order.key.is_empty()),
            Err(error) => assert!(error.position <= length, "order_by position for {input:?}"),
        }
    }

    #[test]
    fn every_valid_filter_parses() {
        for input in VALID_FILTERS {
            assert!(!parse_ok(input).is_empty(), "{input}");
        }
    }

    #[test]
    fn truncations_and_suffixes_never_panic() {
        let mut checked = 0;
        for input in VALID_FILTERS {
            let chars: Vec<char> = input.chars().collect();
            for cut in 0..=chars.len() {
                let prefix: String = chars[..cut].iter().collect();
                let suffix: String = chars[cut..].iter().collect();
                check_invariants(&prefix);
                check_invariants(&suffix);
                checked += 2;
            }
        }
        assert!(checked > 500);
        // A prefix that ends right after a complete clause parses to that clause.
        assert_eq!(parse_ok("metrics.rmse <= 8.5 AND metrics.r2 > 0").len(), 2);
    }

    #[test]
    fn random_inputs_never_panic() {
        const ALPHABET: &[&str] = &[
            "metrics",
            "params",
            "tags",
            "attributes",
            "run",
            ".",
            "`",
            "\"",
            "'",
            "\\",
            " ",
            "(",
            ")",
            ",",
            "=",
            "!",
            "<",
            ">",
            "and",
            "or",
            "not",
            "in",
            "like",
            "-",
            "+",
            "e",
            "1",
            "0.5",
            "x",
            "é",
            "∑",
            "\t",
            "status",
            "start_time",
            "FINISHED",
            "%",
            "_",
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        let mut successes = 0;
        for _ in 0..5000 {
            let piece_count = next() % 14;
            let input: String = (0..piece_count).map(|_| ALPHABET[next() % ALPHABET.len()]).collect();
            check_invariants(&input);
            if parse_filter(&input).is_ok() {
                successes += 1;
            }
        }
        // The empty and whitespace-only inputs at least must succeed.
        assert!(successes > 0);
        // Raw char noise, including control characters and multi-byte chars.
        for _ in 0..3000 {
            let length = next() % 24;
            let input: String = (0..length).filter_map(|_| char::from_u32((next() % 0x2200) as u32)).collect();
            check_invariants(&input);
        }
    }
}
