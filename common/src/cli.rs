//! Command-line parsing shared by both binaries: a bad flag is one line.

use clap::error::ErrorKind;

/// Parses the command line. Help and version print as usual; any error is a
/// single `error: ...` line on stderr and exit status 2.
pub fn parse_args<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(t) => t,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            // clap spreads one error over several lines before its usage block.
            let rendered = e.render().to_string();
            let line: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty())
                .collect();
            eprintln!("{} (see --help)", line.join(" "));
            std::process::exit(2);
        }
    }
}
