//! `doppel bookmark`: names on snapshots, pinning them against retention.

use clap::Subcommand;
use doppel_model::{AddBookmark, Bookmark};

use super::{table, CliError, Ctx};

#[derive(Subcommand)]
pub enum BookmarkCommand {
    /// Put a name on a snapshot; retention keeps it while the bookmark lasts.
    #[command(
        after_help = "Examples:\n  doppel bookmark add before-migration --snapshot tree\n  doppel bookmark add q3-close --snapshot SNAPSHOT-12 --expires-in 30d\n  doppel vdb provision --name old --from tree@before-migration --env target --params @vdb.json"
    )]
    Add {
        /// Unique within the snapshot's dSource or VDB.
        name: String,
        /// SNAPSHOT-<n>, a dSource or VDB (its latest snapshot), or DATASET@SNAPSHOT-<n>.
        #[arg(long)]
        snapshot: String,
        /// When it stops pinning and is removed (RFC 3339).
        #[arg(long, conflicts_with = "expires_in")]
        expires_at: Option<String>,
        /// The same, as a duration from now (7d).
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// Bookmarks, by dataset and name.
    List {
        /// A dSource or VDB.
        #[arg(long)]
        dataset: Option<String>,
    },
    /// A bookmark: BOOKMARK-<n>, DATASET@NAME, or a name only one dataset has.
    Show { bookmark: String },
    /// Remove a bookmark (its snapshot stays, but no longer pinned by it).
    Delete { bookmark: String },
}

fn rows(list: &[Bookmark]) {
    let rows = list
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                b.reference.clone(),
                b.snapshot.clone(),
                format!("{} ({})", b.object_name, b.object),
                match (&b.expires_at, b.expired) {
                    (Some(t), true) => format!("{t} (expired)"),
                    (Some(t), false) => t.clone(),
                    (None, _) => "never".into(),
                },
            ]
        })
        .collect();
    table(&["NAME", "REFERENCE", "SNAPSHOT", "OF", "EXPIRES"], rows);
}

pub fn run(ctx: &Ctx, cmd: BookmarkCommand) -> Result<(), CliError> {
    let c = &ctx.client;
    match cmd {
        BookmarkCommand::Add {
            name,
            snapshot,
            expires_at,
            expires_in,
        } => {
            let b = c.add_bookmark(&AddBookmark {
                name,
                snapshot,
                expires_at,
                expires_in,
            })?;
            ctx.print(&b, |b| rows(std::slice::from_ref(b)));
        }
        BookmarkCommand::List { dataset } => {
            let l = c.list_bookmarks(dataset.as_deref())?;
            ctx.print(&l, |l| rows(l));
        }
        BookmarkCommand::Show { bookmark } => {
            let b = c.get_bookmark(&bookmark)?;
            ctx.print(&b, |b| rows(std::slice::from_ref(b)));
        }
        BookmarkCommand::Delete { bookmark } => {
            let b = c.delete_bookmark(&bookmark)?;
            ctx.print(&b, |b| {
                println!(
                    "deleted bookmark {} ({}) of {}",
                    b.name, b.reference, b.object_name
                )
            });
        }
    }
    Ok(())
}
