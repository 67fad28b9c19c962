//! `lookout cameras`: the cameras the OS reports and the modes each offers.

use anyhow::Result;

pub fn run() -> Result<()> {
    let cameras = crate::source::list_cameras()?;
    if cameras.is_empty() {
        println!("no cameras found");
        return Ok(());
    }
    for cam in cameras {
        let node = cam
            .node
            .as_ref()
            .map_or(String::new(), |n| format!(" ({})", n.display()));
        println!("camera:{}  {}{node}", cam.index, cam.name);
        if let Some(error) = &cam.error {
            println!("    modes unavailable: {error}");
        }
        for mode in &cam.modes {
            println!("    {mode}");
        }
    }
    Ok(())
}
