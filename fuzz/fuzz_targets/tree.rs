//! Tree blobs after decryption: whatever `Tree::from_plain` accepts must be safe to
//! restore, so the target checks the promises restore relies on: every name is one
//! ordinary path component and names are strictly increasing.
#![no_main]

use cairn::format::tree::{NodeKind, Tree, unsafe_name_reason};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tree) = Tree::from_plain(data) else {
        return;
    };
    for w in tree.nodes.windows(2) {
        assert!(w[0].name < w[1].name, "names not strictly increasing");
    }
    for n in &tree.nodes {
        assert!(unsafe_name_reason(&n.name.0).is_none(), "unsafe name accepted");
        let path = std::path::Path::new("/target").join(n.name.to_os());
        assert_eq!(path.parent(), Some(std::path::Path::new("/target")));
        match n.kind {
            NodeKind::Dir => assert!(n.subtree.is_some()),
            NodeKind::Symlink => assert!(n.link_target.is_some()),
            _ => {}
        }
    }
    // What was accepted round-trips to an equally valid tree.
    let again = Tree::from_plain(&tree.to_plain()).expect("re-encoded tree is valid");
    assert_eq!(again, tree);
});
