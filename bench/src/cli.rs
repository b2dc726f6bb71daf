//! Command-line helpers shared by the benchmarks (std only).

/// True if `-h` or `--help` appears anywhere.
pub fn wants_help(args: &[String]) -> bool {
    args.iter().any(|a| a == "-h" || a == "--help")
}

/// A numeric flag: its name (`--rounds`), where to store it, and its smallest allowed value.
pub struct Flag<'a> {
    pub name: &'static str,
    pub value: &'a mut usize,
    pub min: usize,
}

/// Parses `--name value` and `--name=value` pairs into `flags`. Anything else is an error
/// naming the offending argument.
pub fn parse_flags(args: &[String], flags: &mut [Flag<'_>]) -> Result<(), String> {
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (arg.as_str(), None),
        };
        let Some(flag) = flags.iter_mut().find(|f| f.name == name) else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let value = match inline {
            Some(value) => value,
            None => it
                .next()
                .map(String::as_str)
                .ok_or_else(|| format!("{name} needs a value"))?,
        };
        let parsed: usize = value
            .replace('_', "")
            .parse()
            .map_err(|_| format!("{name}: {value:?} is not a non-negative integer"))?;
        if parsed < flag.min {
            return Err(format!("{name} must be at least {}", flag.min));
        }
        *flag.value = parsed;
    }
    Ok(())
}
