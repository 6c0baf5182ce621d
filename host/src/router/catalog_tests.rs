//! The catalog's naming rules and per-caller views, without a router.

use std::ops::Not;

use serde_json::json;

use super::*;

fn tools(names: &[&str]) -> Vec<Value> {
    names.iter().map(|n| json!({"name": n, "inputSchema": {"type": "object"}})).collect()
}

fn names(catalog: &Catalog) -> Vec<&str> {
    catalog.tools().iter().map(|e| e.name.as_str()).collect()
}

#[test]
fn unique_names_stay_and_collisions_prefix_every_copy() {
    let builtin = tools(&["relay_get_status"]);
    let (a, b) = (tools(&["echo", "add"]), tools(&["echo", "relay_get_status", "mul"]));
    let (oa, ob) = (Owner::Backend("a".into()), Owner::Adapter("b".into()));
    let catalog = Catalog::from_sources(&builtin, [(&oa, a.as_slice()), (&ob, b.as_slice())].into_iter());
    assert_eq!(names(&catalog), ["relay_get_status", "a__echo", "add", "b__echo", "b__relay_get_status", "mul"]);
    let entry = catalog.get("b__echo").unwrap();
    assert_eq!((entry.owner.clone(), entry.upstream_name.as_str()), (Owner::Adapter("b".into()), "echo"));
    assert_eq!(entry.definition["name"], "b__echo");
}

#[test]
fn a_view_hides_renames_and_a_taken_name_hides_the_later_item() {
    let a = tools(&["x", "y", "z"]);
    let oa = Owner::Backend("a".into());
    let catalog = Catalog::from_sources(&[], [(&oa, a.as_slice())].into_iter());
    let view = catalog.view(|kind| {
        (kind == ListKind::Tools).then(|| vec![None, Some(json!({"name": "z"})), Some(json!({"name": "z"}))])
    });
    assert_eq!(names(&view), ["z"], "x hidden, y's rename onto z refused (hidden), z kept");
    assert_eq!(view.get("z").unwrap().upstream_name, "z", "no rename takes another item's name");
    let view = catalog.view(|kind| {
        (kind == ListKind::Tools).then(|| vec![None, Some(json!({"name": "w"})), Some(json!({"name": "w"}))])
    });
    assert_eq!(names(&view), ["w"], "two renames onto one new name: the first keeps it");
    let w = view.get("w").unwrap();
    assert_eq!((w.upstream_name.as_str(), w.catalog_name.as_str()), ("y", "y"), "calls reach y");
    assert!(view.get("x").is_none() && view.get("y").is_none(), "hidden and old names are not routable");
    assert_eq!(names(&catalog), ["x", "y", "z"], "the catalog itself is unchanged");
    assert!(catalog.view(|_| None).differs(&catalog, ListKind::Tools).not());
}

#[test]
fn a_view_shares_the_items_it_shows_unchanged_with_the_catalog() {
    let a = tools(&["x", "y", "z"]);
    let oa = Owner::Backend("a".into());
    let catalog = Catalog::from_sources(&[], [(&oa, a.as_slice())].into_iter());
    let (x, y) = (catalog.tools()[0].definition.clone(), catalog.tools()[1].definition.clone());
    let view = catalog.view(|kind| {
        (kind == ListKind::Tools).then(|| vec![Some(x.clone()), Some(json!({"name": "y", "description": "d"})), None])
    });
    assert!(Arc::ptr_eq(&view.tools()[0], &catalog.tools()[0]), "x is shown as it is: shared, not copied");
    assert!(!Arc::ptr_eq(&view.tools()[1], &catalog.tools()[1]) && view.tools()[1].definition != y);
    assert_eq!((view.items_apart_from(&catalog), catalog.items_apart_from(&catalog)), (2, 0));
}

#[test]
fn the_result_does_not_depend_on_arrival_order_within_a_backend_set() {
    let (a, b) = (tools(&["x"]), tools(&["x"]));
    let (oa, ob) = (Owner::Backend("a".into()), Owner::Backend("b".into()));
    let one = Catalog::from_sources(&[], [(&oa, a.as_slice()), (&ob, b.as_slice())].into_iter());
    let two = Catalog::from_sources(&[], [(&oa, a.as_slice()), (&ob, b.as_slice())].into_iter());
    assert_eq!(names(&one), names(&two));
}

#[test]
fn colliding_resource_uris_are_rewritten_per_backend() {
    let mut section = Section::default();
    let a = vec![json!({"uri": "file:///x", "name": "x"}), json!({"uri": "mem://only-a", "name": "a"})];
    let b = vec![json!({"uri": "file:///x", "name": "x"})];
    let (oa, ob) = (Owner::Backend("a".into()), Owner::Backend("b".into()));
    Section::build(
        "uri",
        &HashSet::new(),
        [(&oa, a.as_slice()), (&ob, b.as_slice())].into_iter(),
        str::to_owned,
        relay_uri,
        claims_relay_uri,
        &mut section,
    );
    let uris: Vec<&str> = section.entries().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(uris, ["relay://a/file%3A%2F%2F%2Fx", "mem://only-a", "relay://b/file%3A%2F%2F%2Fx"]);
    assert_eq!(section.get("relay://b/file%3A%2F%2F%2Fx").unwrap().upstream_name, "file:///x");
    assert!(section.is_moved("file:///x"), "the original URI is no name clients may use");
    assert!(!section.is_moved("mem://only-a") && !section.is_moved("mem://other"));
    assert_eq!(relay_uri(&oa, "demo://doc/a-b.md"), "relay://a/demo%3A%2F%2Fdoc%2Fa-b.md");
}

#[test]
fn no_source_can_take_another_sources_prefixed_name() {
    let (alpha, zeta, aaa) = (tools(&["delete_repo"]), tools(&["delete_repo"]), tools(&["zeta__delete_repo"]));
    let (oa, oz, oaaa) = (Owner::Backend("alpha".into()), Owner::Backend("zeta".into()), Owner::Backend("aaa".into()));
    let sources = [(&oaaa, aaa.as_slice()), (&oa, alpha.as_slice()), (&oz, zeta.as_slice())];
    let catalog = Catalog::from_sources(&[], sources.into_iter());
    assert_eq!(catalog.get("zeta__delete_repo").unwrap().owner, oz);
    assert_eq!(catalog.get("aaa__zeta__delete_repo").unwrap().owner, oaaa);
    assert!(claims_relay_uri(&oaaa, "relay://zeta/x") && !claims_relay_uri(&oz, "relay://zeta/x"));
}

/// Source names may hold `__` or end in `_`: another source's prefixed names are still its own.
#[test]
fn a_source_whose_name_is_a_prefix_of_anothers_cannot_take_its_names() {
    let (victim, hostile) = (tools(&["deploy"]), tools(&["deploy", "ops__prod__deploy"]));
    let (ovictim, ohostile) = (Owner::Backend("ops__prod".into()), Owner::Backend("ops".into()));
    let sources = [(&ohostile, hostile.as_slice()), (&ovictim, victim.as_slice())];
    let catalog = Catalog::from_sources(&[], sources.into_iter());
    assert_eq!(catalog.get("ops__prod__deploy").unwrap().owner, ovictim, "{:?}", names(&catalog));
    let (victim, hostile) = (tools(&["deploy"]), tools(&["deploy", "a___deploy"]));
    let (ovictim, ohostile) = (Owner::Backend("a_".into()), Owner::Backend("a".into()));
    let sources = [(&ohostile, hostile.as_slice()), (&ovictim, victim.as_slice())];
    let catalog = Catalog::from_sources(&[], sources.into_iter());
    assert_eq!(catalog.get("a___deploy").unwrap().owner, ovictim, "{:?}", names(&catalog));
}

#[test]
fn a_name_a_source_lists_twice_is_offered_once_under_its_own_name() {
    let a = tools(&["delete_repo", "x", "delete_repo"]);
    let oa = Owner::Backend("a".into());
    let catalog = Catalog::from_sources(&[], [(&oa, a.as_slice())].into_iter());
    assert_eq!(names(&catalog), ["delete_repo", "x"], "not prefixed, and no numbered second name");
}

#[test]
fn names_are_sanitised_cut_and_kept_unique() {
    let long = "t".repeat(200);
    let a = tools(&["has space", &long, "x"]);
    let weird = tools(&["a__x", "x"]);
    let (oa, ow) = (Owner::Backend("a".into()), Owner::Backend("w".into()));
    let catalog = Catalog::from_sources(&[], [(&oa, a.as_slice()), (&ow, weird.as_slice())].into_iter());
    let names = names(&catalog);
    assert_eq!(names[0], "has_space");
    assert_eq!(names[1].len(), 128);
    assert!(names.iter().all(|n| n.len() <= 128));
    let unique: HashSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    assert_eq!(catalog.get("has_space").unwrap().upstream_name, "has space");
}

#[test]
fn names_that_collide_in_their_first_128_characters_are_numbered_and_the_build_ends() {
    // One backend listing two tools whose names agree in their first 128 characters: both cut
    // to one name, which a numbered suffix must still tell apart.
    let long = "a".repeat(130);
    let a = tools(&[&format!("{long}1"), &format!("{long}2"), &long]);
    let oa = Owner::Backend("a".into());
    let catalog = Catalog::from_sources(&[], [(&oa, a.as_slice())].into_iter());
    let names = names(&catalog);
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|n| n.len() <= 128), "{names:?}");
    let unique: HashSet<_> = names.iter().collect();
    assert_eq!(unique.len(), 3, "{names:?}");
    // Prompts are not cut, but a collision's numbered name is, at a character's boundary.
    let prompt = |name: &str| json!({"name": name});
    let wide = "é".repeat(100);
    let listed = [prompt(&wide), prompt(&wide), prompt(&wide)];
    let mut section = Section::default();
    for item in &listed {
        section.push("name", wide.clone(), oa.clone(), &wide, item);
    }
    let keys: HashSet<_> = section.entries().iter().map(|e| e.name.clone()).collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
}
