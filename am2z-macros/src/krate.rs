//! The path generated code reaches am2z through.
//!
//! `crate = path` says it outright. Without it, the name is read from the user's manifest, as
//! proc-macro crates usually do (`proc-macro-crate`): `flows = { package = "am2z", .. }` makes
//! it `::flows`, with no key to write. A manifest that cannot be read, or that does not name
//! am2z, leaves the default `::am2z`.

use std::path::{Path, PathBuf};

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

/// The package whose crate generated code names.
const PACKAGE: &str = "am2z";

/// `custom` when given, else `::<the name this crate gives am2z>`.
pub(crate) fn path(custom: Option<&syn::Path>) -> TokenStream {
    if let Some(path) = custom {
        return quote!(#path);
    }
    let name = std::env::var_os("CARGO_MANIFEST_DIR")
        .and_then(|dir| dependency_name(Path::new(&dir)))
        .unwrap_or_else(|| PACKAGE.to_owned());
    let ident = Ident::new(&name, Span::call_site());
    quote!(::#ident)
}

/// The name the crate at `dir` gives am2z, read from its `Cargo.toml` (and, for a dependency
/// inherited with `workspace = true`, from the workspace's).
fn dependency_name(dir: &Path) -> Option<String> {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
    let deps = Dependencies::read(&manifest);
    if deps.package_name.as_deref() == Some(PACKAGE) {
        // am2z's own tests, examples and doctests link it as `am2z`.
        return Some(PACKAGE.to_owned());
    }
    let mut workspace = None;
    let mut found = None;
    for dep in &deps.entries {
        let package = match (&dep.package, dep.workspace) {
            (Some(package), _) => Some(package.clone()),
            (None, true) => {
                let root = workspace.get_or_insert_with(|| workspace_dependencies(dir));
                root.as_ref()
                    .and_then(|root| root.entries.iter().find(|d| d.key == dep.key))
                    .map(|d| d.package.clone().unwrap_or_else(|| d.key.clone()))
            }
            (None, false) => Some(dep.key.clone()),
        };
        if package.as_deref() == Some(PACKAGE) {
            if dep.key == PACKAGE {
                return Some(PACKAGE.to_owned());
            }
            found.get_or_insert_with(|| dep.key.replace('-', "_"));
        }
    }
    found
}

/// The `[workspace.dependencies]` of the nearest manifest at or above `dir` that has a
/// `[workspace]`.
fn workspace_dependencies(dir: &Path) -> Option<Dependencies> {
    let mut dir: Option<PathBuf> = Some(dir.to_path_buf());
    while let Some(current) = dir {
        if let Ok(manifest) = std::fs::read_to_string(current.join("Cargo.toml")) {
            let deps = Dependencies::read(&manifest);
            if deps.is_workspace {
                return Some(deps);
            }
        }
        dir = current.parent().map(Path::to_path_buf);
    }
    None
}

/// What a manifest says about its dependencies, read line by line: enough TOML for dependency
/// tables (`[dependencies]`, `[dev-dependencies]`, `[target.'..'.dependencies]`,
/// `[workspace.dependencies]`, `[dependencies.name]`), inline tables and dotted keys.
#[derive(Default)]
struct Dependencies {
    package_name: Option<String>,
    is_workspace: bool,
    entries: Vec<Dependency>,
}

#[derive(Default)]
struct Dependency {
    key: String,
    package: Option<String>,
    workspace: bool,
}

/// Where the reader is in the manifest.
enum Table {
    Package,
    /// A table of dependencies: each key is one.
    Dependencies,
    /// `[dependencies.<name>]`: each key is a field of one dependency.
    Dependency(usize),
    Other,
}

impl Dependencies {
    fn read(manifest: &str) -> Self {
        let mut deps = Dependencies::default();
        let mut table = Table::Other;
        for line in manifest.lines() {
            let line = strip_comment(line).trim();
            if line.is_empty() {
                continue;
            }
            if let Some(header) = line.strip_prefix('[') {
                let header = header.trim_start_matches('[').trim_end_matches(']').trim();
                let segments = key_segments(header);
                table = deps.enter(&segments);
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let key = key_segments(key.trim());
            let value = value.trim();
            match table {
                Table::Package if key == ["name"] => deps.package_name = string_value(value),
                Table::Dependencies => {
                    let Some(name) = key.first() else { continue };
                    let index = deps.entry(name);
                    let entry = &mut deps.entries[index];
                    match key.get(1).map(String::as_str) {
                        None => {
                            entry.package = inline_field(value, "package");
                            entry.workspace =
                                inline_field(value, "workspace").as_deref() == Some("true");
                        }
                        Some(field) => entry.set(field, value),
                    }
                }
                Table::Dependency(index) => {
                    if let [field] = key.as_slice() {
                        deps.entries[index].set(field, value);
                    }
                }
                _ => {}
            }
        }
        deps
    }

    fn enter(&mut self, header: &[String]) -> Table {
        let is_dependencies = |s: &str| {
            matches!(
                s,
                "dependencies" | "dev-dependencies" | "build-dependencies"
            )
        };
        match header {
            [package] if package == "package" => Table::Package,
            [workspace] if workspace == "workspace" => {
                self.is_workspace = true;
                Table::Other
            }
            [workspace, deps] if workspace == "workspace" && deps == "dependencies" => {
                self.is_workspace = true;
                Table::Dependencies
            }
            [deps] if is_dependencies(deps) => Table::Dependencies,
            [target, _, deps] if target == "target" && is_dependencies(deps) => Table::Dependencies,
            [deps, name] if is_dependencies(deps) => Table::Dependency(self.entry(name)),
            [target, _, deps, name] if target == "target" && is_dependencies(deps) => {
                Table::Dependency(self.entry(name))
            }
            _ => Table::Other,
        }
    }

    fn entry(&mut self, key: &str) -> usize {
        if let Some(index) = self.entries.iter().position(|d| d.key == key) {
            return index;
        }
        self.entries.push(Dependency {
            key: key.to_owned(),
            ..Dependency::default()
        });
        self.entries.len() - 1
    }
}

impl Dependency {
    fn set(&mut self, field: &str, value: &str) {
        match field {
            "package" => self.package = string_value(value),
            "workspace" => self.workspace = value == "true",
            _ => {}
        }
    }
}

/// `line` without its `# comment` (a `#` inside a string is kept).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The segments of a dotted key, unquoted: `target.'cfg(unix)'.dependencies` has three.
fn key_segments(key: &str) -> Vec<String> {
    let mut segments = Vec::new();
    let mut current = String::new();
    let mut quote = None;
    for c in key.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '.') => segments.push(std::mem::take(&mut current).trim().to_owned()),
            (None, c) if c.is_whitespace() => {}
            (_, c) => current.push(c),
        }
    }
    segments.push(current.trim().to_owned());
    segments
}

/// The contents of a quoted string value.
fn string_value(value: &str) -> Option<String> {
    let quote = value.chars().next().filter(|c| matches!(c, '"' | '\''))?;
    let rest = &value[1..];
    rest.find(quote).map(|end| rest[..end].to_owned())
}

/// The value of `field` in an inline table `{ a = "x", field = "y" }`, as written (a string
/// without its quotes).
fn inline_field(table: &str, field: &str) -> Option<String> {
    let inner = table.strip_prefix('{')?.trim_end().strip_suffix('}')?;
    let mut depth = 0usize;
    let mut quote = None;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in inner.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '{' | '[') => depth += 1,
            (None, '}' | ']') => depth = depth.saturating_sub(1),
            (None, ',') if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts.into_iter().find_map(|part| {
        let (key, value) = part.split_once('=')?;
        if key_segments(key.trim()) != [field] {
            return None;
        }
        let value = value.trim();
        string_value(value).or_else(|| Some(value.to_owned()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_in(manifest: &str) -> Option<String> {
        let dir = std::env::temp_dir().join(format!(
            "am2z-macros-krate-{}-{:x}",
            std::process::id(),
            manifest.len() * 31 + manifest.bytes().map(usize::from).sum::<usize>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("Cargo.toml"), manifest).expect("write manifest");
        let name = dependency_name(&dir);
        std::fs::remove_dir_all(&dir).expect("remove temp dir");
        name
    }

    #[test]
    fn a_plain_dependency_is_am2z() {
        let manifest = "[package]\nname = \"app\"\n\n[dependencies]\nam2z = \"0.1\"\n";
        assert_eq!(name_in(manifest).as_deref(), Some("am2z"));
    }

    #[test]
    fn a_renamed_dependency_gives_its_key() {
        let manifest = "[package]\nname = \"app\"\n[dependencies]\nserde = \"1\"\n\
                        my-flows = { version = \"0.1\", package = \"am2z\" } # renamed\n";
        assert_eq!(name_in(manifest).as_deref(), Some("my_flows"));
    }

    #[test]
    fn every_dependency_table_form() {
        let table = "[package]\nname = \"app\"\n[dependencies.flows]\npath = \"../am2z\"\npackage = 'am2z'\n";
        assert_eq!(name_in(table).as_deref(), Some("flows"));
        let dotted = "[dev-dependencies]\nflows.package = \"am2z\"\nflows.path = \"x\"\n";
        assert_eq!(name_in(dotted).as_deref(), Some("flows"));
        let target = "[target.'cfg(unix)'.dependencies]\nflows = { package = \"am2z\" }\n";
        assert_eq!(name_in(target).as_deref(), Some("flows"));
    }

    #[test]
    fn a_dependency_inherited_from_the_workspace() {
        let root = std::env::temp_dir().join(format!("am2z-macros-ws-{}", std::process::id()));
        let member = root.join("member");
        std::fs::create_dir_all(&member).expect("temp dir");
        let workspace = "[workspace]\nmembers = [\"member\"]\n\n[workspace.dependencies]\n\
                         flows = { package = \"am2z\", path = \"../am2z\" }\n";
        std::fs::write(root.join("Cargo.toml"), workspace).expect("write");
        let inherits = "[package]\nname = \"app\"\n[dependencies]\nflows = { workspace = true }\n";
        std::fs::write(member.join("Cargo.toml"), inherits).expect("write");
        let name = dependency_name(&member);
        std::fs::remove_dir_all(&root).expect("remove temp dir");
        assert_eq!(name.as_deref(), Some("flows"));
    }

    #[test]
    fn am2z_itself_and_strangers() {
        assert_eq!(
            name_in("[package]\nname = \"am2z\"\n").as_deref(),
            Some("am2z")
        );
        let other = "[dependencies]\nflows = { package = \"not-am2z\" }\n# am2z = \"1\"\n";
        assert_eq!(name_in(other), None);
    }

    #[test]
    fn reads_keys_and_strings() {
        assert_eq!(key_segments("target.'cfg(a.b)'.dependencies").len(), 3);
        assert_eq!(
            inline_field(
                "{ path = \"a,b\", features = [\"x\", \"y\"], package = \"am2z\" }",
                "package"
            )
            .as_deref(),
            Some("am2z")
        );
        assert_eq!(strip_comment("a = \"#x\" # c"), "a = \"#x\" ");
    }
}
