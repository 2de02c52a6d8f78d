namespace QubesFirewall.TestQubesd;

/// <summary>
/// The root's <c>qubesfirewall-state/</c> folder, which stands in for what lives inside qubes (layout in
/// examples/qubes-root/README.md): <c>&lt;qube&gt;/power-state</c> (one word; no file: Halted) and
/// <c>&lt;qube&gt;/qubesdb.txt</c>, a network qube's QubesDB as "path&lt;TAB&gt;value" lines sorted by path.
/// This is the project's own format, read and written here without the module's code.
/// </summary>
internal sealed class StateFolder(string rootPath)
{
    public string Path { get; } = System.IO.Path.Combine(rootPath, "qubesfirewall-state");

    private static readonly string[] States = ["Halted", "Running", "Paused", "Transient", "Halting", "Dying", "Crashed", "Suspended"];

    /// <summary>The power state word as get_power_state names it; an unknown word is "NA", as qubesd says for an unknown libvirt state.</summary>
    public string ReadPowerState(string qube)
    {
        var file = System.IO.Path.Combine(Path, qube, "power-state");
        if (!File.Exists(file)) return "Halted";
        var word = File.ReadAllText(file).Trim();
        return States.FirstOrDefault(s => string.Equals(s, word, StringComparison.OrdinalIgnoreCase)) ?? "NA";
    }

    public void WritePowerState(string qube, string state)
    {
        var dir = System.IO.Path.Combine(Path, qube);
        Directory.CreateDirectory(dir);
        File.WriteAllText(System.IO.Path.Combine(dir, "power-state"), state + "\n");
    }

    /// <summary>
    /// QubesDB <c>rm</c> of each subtree (a path ending in '/': every key under it) and then <c>write</c> of each
    /// entry, in the network qube's qubesdb.txt; the file is rewritten only when its text changes.
    /// </summary>
    public void UpdateQubesDb(string qube, IEnumerable<string> removeSubtrees, IEnumerable<KeyValuePair<string, string>> writes)
    {
        var file = System.IO.Path.Combine(Path, qube, "qubesdb.txt");
        var before = File.Exists(file) ? File.ReadAllText(file) : null;
        var db = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in (before ?? "").Split('\n'))
        {
            var tab = line.IndexOf('\t');
            if (tab > 0) db[line[..tab]] = line[(tab + 1)..];
        }
        foreach (var prefix in removeSubtrees)
            foreach (var key in db.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal)).ToList()) db.Remove(key);
        foreach (var (key, value) in writes) db[key] = value;
        var text = string.Concat(db.Select(e => $"{e.Key}\t{e.Value}\n"));
        if (text == before) return;
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(file)!);
        var tmp = file + ".tmp-" + Guid.NewGuid().ToString("N")[..8];
        File.WriteAllText(tmp, text);
        File.Move(tmp, file, overwrite: true);
    }
}
