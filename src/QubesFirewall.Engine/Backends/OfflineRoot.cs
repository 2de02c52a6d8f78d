using System.Text;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Io;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Validation;

namespace QubesFirewall.Engine.Backends;

/// <summary>
/// A directory laid out like dom0's /var/lib/qubes (qubes.xml, appvms/&lt;vm&gt;/firewall.xml,
/// vm-templates/&lt;vm&gt;/...) plus a state folder dom0 never has, standing in for each qube's
/// QubesDB, /rw/config and power state: <c>qubesfirewall-state/&lt;qube&gt;/</c>.
/// </summary>
public sealed partial class OfflineRoot : IQubesBackend
{
    public const string StateFolderName = "qubesfirewall-state";

    private readonly Func<DateTimeOffset> _clock;

    public OfflineRoot(string root, Func<DateTimeOffset>? clock = null)
    {
        RootPath = Path.GetFullPath(root);
        _clock = clock ?? (() => DateTimeOffset.UtcNow);
        if (!File.Exists(QubesXmlPath))
            throw new QubesFirewallException(ErrorIds.QubesRootNotFound, FailureKind.ObjectNotFound,
                $"'{RootPath}' is not a Qubes root: it has no qubes.xml. Point -Root or $env:QUBESFW_ROOT at a directory laid out like dom0's /var/lib/qubes (the module ships one in its examples/qubes-root folder).", RootPath);
    }

    public string RootPath { get; }

    public string QubesXmlPath => Path.Combine(RootPath, "qubes.xml");

    public string StatePath => Path.Combine(RootPath, StateFolderName);

    public string Description => $"offline root {RootPath}";

    /// <summary>Every change to a qube is recorded in the state folder; nothing has to run.</summary>
    public bool RunsInQubes => false;

    public QubesInventory GetInventory()
    {
        var inventory = QubesXml.Load(QubesXmlPath);
        return inventory.WithPowerStates(name => ReadPowerState(name));
    }

    public Qube GetQube(string vmName) => GetInventory().Find(QubeName.Validate(vmName))
        ?? throw QubesInventory.NotFound(vmName, Description);

    /// <summary>The qube's directory as qubesd lays it out: templates under vm-templates, others under appvms.</summary>
    public string QubeDirectory(Qube qube) =>
        Path.Combine(RootPath, qube.Class == QubeClass.TemplateVM ? "vm-templates" : "appvms", qube.Name);

    /// <summary>dom0 has no Qubes firewall: qubesd keeps rules only for qubes that can have a netvm.</summary>
    public string FirewallPath(Qube qube) => qube.Class == QubeClass.AdminVM
        ? throw new QubesFirewallException(ErrorIds.NoFirewall, FailureKind.InvalidOperation, $"'{qube.Name}' is dom0, which has no Qubes firewall (it has no network qube).", qube.Name)
        : Path.Combine(QubeDirectory(qube), "firewall.xml");

    // A qube's firewall.xml is found from qubes.xml alone: without the power state of every qube of the root, which
    // GetQube reads (a file per qube) and the path does not depend on.
    private string FirewallPath(string vmName) => FirewallPath(QubesXml.Load(QubesXmlPath).Find(QubeName.Validate(vmName))
        ?? throw QubesInventory.NotFound(vmName, Description));

    public FirewallDocument GetFirewall(string vmName) => FirewallXml.Load(FirewallPath(vmName));

    public FirewallEditOutcome ApplyFirewallEdit(string vmName, FirewallEdit edit, FirewallDocument snapshot)
    {
        var path = FirewallPath(vmName);
        using var _ = FileLock.Acquire(FileLock.PathFor(path));
        var now = _clock();
        var current = FirewallXml.Load(path);
        var visible = current.Rules.Where(r => !r.IsExpiredAt(now)).ToList();
        var outcome = edit.ApplyTo(visible);
        using var content = FirewallXml.RenderUtf8(outcome.Rules, now);
        if (current.FileExists && HasContent(path, content.Span)) return outcome;
        if (!current.FileExists && outcome.Removed.Count == 0 && outcome.AlreadyPresent.Count == edit.Insertions.Count && edit.Insertions.Count > 0)
            return outcome; // every rule already present in the default list: nothing to write
        AtomicFile.WriteAllBytes(path, content.Span, FirewallFileMode);
        return outcome;
    }

    // True when the file's text is the content (UTF-8): compared as bytes, or, for a file that starts with a byte
    // order mark or is UTF-16 or UTF-32, as the text File.ReadAllText decodes.
    private static bool HasContent(string path, ReadOnlySpan<byte> content)
    {
        using var file = PooledBytes.ReadFile(path);
        if (file.Length > 0 && file.Span[0] is 0xEF or 0xFE or 0xFF or 0x00)
            return File.ReadAllText(path) == Encoding.UTF8.GetString(content);
        return file.Span.SequenceEqual(content);
    }

    // qubesd writes firewall.xml with mode 0664.
    private const UnixFileMode FirewallFileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead;

    public IReadOnlyList<QubesDbEntry> SyncFirewall(string vmName)
    {
        var inventory = GetInventory();
        var qube = inventory.Find(QubeName.Validate(vmName)) ?? throw QubesInventory.NotFound(vmName, Description);
        if (qube.NetVM is null)
            throw new QubesFirewallException(ErrorIds.NoNetVM, FailureKind.InvalidOperation, $"'{qube.Name}' has no network qube, so no qube enforces its firewall rules. Set its netvm first.", vmName);
        var rules = FirewallXml.Load(FirewallPath(qube)).Rules;
        var entries = QubesDbRenderer.Render(qube.NetVM, qube.IP, qube.IPv6, rules, _clock());
        var store = new QubesDbStore(Path.Combine(StatePath, qube.NetVM, "qubesdb.txt"));
        store.Replace(QubesDbRenderer.SubtreesToClear(qube.IP, qube.IPv6), entries);
        return entries;
    }

    /// <summary>What the state folder holds as a network qube's QubesDB.</summary>
    public IReadOnlyList<QubesDbEntry> ReadQubesDb(string vmName) =>
        new QubesDbStore(Path.Combine(StatePath, vmName, "qubesdb.txt")).Read(vmName);

    public void SetFeature(string vmName, string name, string value)
    {
        GetQube(vmName);
        QubesXml.SetFeature(QubesXmlPath, vmName, name, value);
    }

    public bool RemoveFeature(string vmName, string name)
    {
        GetQube(vmName);
        return QubesXml.RemoveFeature(QubesXmlPath, vmName, name);
    }

    private PowerState ReadPowerState(string vmName)
    {
        var file = Path.Combine(StatePath, vmName, "power-state");
        if (!File.Exists(file)) return PowerState.Halted;
        return Enum.TryParse<PowerState>(ReadShortText(file).Trim(), ignoreCase: true, out var state) ? state : PowerState.Unknown;
    }

    public void Dispose() { }

    // A small ASCII file (a power state) read into the stack, without File.ReadAllText's reader and buffers (every command
    // reads the power state of each qube of the root); anything longer or not ASCII (a byte order mark) is read by it.
    private static string ReadShortText(string file)
    {
        Span<byte> bytes = stackalloc byte[64];
        int length;
        using (var handle = File.OpenHandle(file, FileMode.Open, FileAccess.Read, FileShare.Read))
            length = RandomAccess.Read(handle, bytes, 0);
        if (length == bytes.Length || !Ascii.IsValid(bytes[..length])) return File.ReadAllText(file);
        return Encoding.ASCII.GetString(bytes[..length]);
    }

    /// <summary>Where the state folder keeps a qube's copy of a /rw path.</summary>
    public string QubeFilePath(string vmName, string path)
    {
        QubeName.Validate(vmName);
        if (!path.StartsWith("/rw/", StringComparison.Ordinal) || path.Contains("/../", StringComparison.Ordinal) || path.EndsWith("/..", StringComparison.Ordinal))
            throw QubesFirewallException.Invalid(ErrorIds.InvalidQubePath, $"'{RuleGrammar.Printable(path)}' is not a path under /rw.", path);
        return Path.Combine(StatePath, vmName, path.TrimStart('/'));
    }

    /// <summary>How large a qube's file may be (the same caps as the live backend's reads).</summary>
    public Trust.QubeAnswerLimits AnswerLimits { get; set; } = new();

    /// <summary>The file's text, every byte kept (<see cref="Trust.QubeText.Decode"/>); a file over the cap is refused.</summary>
    public string? ReadQubeFile(string vmName, string path)
    {
        var file = QubeFilePath(vmName, path);
        if (!File.Exists(file)) return null;
        using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        var reader = new Trust.BoundedReader(AnswerLimits.FileBytes);
        if (!reader.ReadAsync(stream, CancellationToken.None).GetAwaiter().GetResult())
            throw Trust.BoundedReader.TooLarge(vmName, $"read {path}", "output", AnswerLimits.FileBytes);
        return Trust.QubeText.Decode(reader.ToArray());
    }

    public UnixFileMode? ReadQubeFileMode(string vmName, string path)
    {
        var file = QubeFilePath(vmName, path);
        return File.Exists(file) && !OperatingSystem.IsWindows() ? File.GetUnixFileMode(file) : null;
    }

    public void WriteQubeFile(string vmName, string path, string content, UnixFileMode mode)
    {
        GetQube(vmName);
        var file = QubeFilePath(vmName, path);
        using var _ = FileLock.Acquire(FileLock.PathFor(file));
        AtomicFile.WriteAllBytes(file, Trust.QubeText.Encode(content), mode);
    }

    public void DeleteQubeFile(string vmName, string path)
    {
        GetQube(vmName);
        var file = QubeFilePath(vmName, path);
        using var _ = FileLock.Acquire(FileLock.PathFor(file));
        File.Delete(file);
    }

    /// <summary>One lock for the whole root (port forwards and bindings share hook files): qubesfirewall-state/.deploy.lock.</summary>
    public IDisposable LockDeployments()
    {
        var file = Path.Combine(StatePath, ".deploy.lock");
        try
        {
            return FileLock.Acquire(file, TimeSpan.FromMinutes(5));
        }
        catch (IOException ex)
        {
            throw new QubesFirewallException(ErrorIds.DeploymentLocked, FailureKind.ResourceUnavailable,
                $"Another deployment into {Description} has held {file} for 5 minutes; nothing was changed. Try again when it has finished.", file, ex);
        }
    }

    /// <summary>Offline nothing runs; the call is appended to the qube's applied.log so tests and users can see it.</summary>
    public QubeCommandResult RunQubeScript(string vmName, string path)
    {
        GetQube(vmName);
        var log = Path.Combine(StatePath, vmName, "applied.log");
        Directory.CreateDirectory(Path.GetDirectoryName(log)!);
        File.AppendAllText(log, $"{_clock():O} {path}\n");
        return new QubeCommandResult(vmName, path, 0, "offline root: recorded, not run", Executed: false);
    }

    /// <summary>
    /// Offline nothing runs: the script is kept as <c>qubesfirewall-state/&lt;qube&gt;/last-run.sh</c> and the run is
    /// appended to the qube's applied.log (time, description, SHA-256 of the script), for tests and users to see.
    /// </summary>
    public QubeCommandResult RunQubeShellScript(string vmName, string script, string description)
    {
        GetQube(vmName);
        var dir = Path.Combine(StatePath, vmName);
        Directory.CreateDirectory(dir);
        AtomicFile.WriteAllText(Path.Combine(dir, "last-run.sh"), script);
        var hash = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(script))).ToLowerInvariant();
        File.AppendAllText(Path.Combine(dir, "applied.log"), $"{_clock():O} script sha256:{hash} {description.Replace('\n', ' ')}\n");
        return new QubeCommandResult(vmName, "(standard input)", 0, "offline root: recorded, not run", Executed: false);
    }

    public void SetPowerState(string vmName, PowerState state) =>
        AtomicFile.WriteAllText(Path.Combine(StatePath, vmName, "power-state"), state + "\n");

    /// <summary>Offline a start only records the new power state (qubesfirewall-state/&lt;qube&gt;/power-state).</summary>
    public void StartQube(string vmName)
    {
        var qube = GetQube(vmName);
        if (qube.Class is QubeClass.AdminVM or QubeClass.RemoteVM)
            throw new QubesFirewallException(ErrorIds.QubeCannotStart, FailureKind.InvalidOperation, $"'{qube.Name}' is an {qube.Class}; it is not started by qubesd.", vmName);
        if (ReadPowerState(qube.Name) != PowerState.Running) SetPowerState(qube.Name, PowerState.Running);
    }

    public void SetProperty(string vmName, string name, string value)
    {
        GetQube(vmName);
        QubesXml.SetProperty(QubesXmlPath, vmName, name, value);
    }

    public void ResetProperty(string vmName, string name)
    {
        GetQube(vmName);
        QubesXml.ResetProperty(QubesXmlPath, vmName, name);
    }

    /// <summary>
    /// Offline side of a network re-attach (Repair-QubeNetVm), after netvm was set: what qubesd does
    /// when it attaches a running qube (it reloads the qube's firewall into the network qube's QubesDB,
    /// here the state folder's qubesdb.txt), and a line in the qube's applied.log saying so.
    /// </summary>
    public void NetworkReattached(string vmName, string netVm, string commands)
    {
        GetQube(vmName);
        SyncFirewall(vmName);
        var log = Path.Combine(StatePath, vmName, "applied.log");
        Directory.CreateDirectory(Path.GetDirectoryName(log)!);
        File.AppendAllText(log, $"{_clock():O} netvm re-attached to {netVm} ({commands.Replace('\n', ' ')}); firewall reloaded into {netVm}\n");
    }
}

/// <summary>
/// A qube's QubesDB in the offline state folder: one "path&lt;TAB&gt;value" line per key, sorted by
/// path. Replacing a client's entries removes its old subtree first, as qubesd does, so a shorter
/// rule list leaves no stale keys behind.
/// </summary>
internal sealed class QubesDbStore(string path)
{
    public IReadOnlyList<QubesDbEntry> Read(string qubeName)
    {
        if (!File.Exists(path)) return [];
        var entries = new List<QubesDbEntry>();
        var lines = new EntryLines(File.ReadAllText(path));
        while (lines.MoveNext()) entries.Add(new QubesDbEntry(qubeName, lines.Key.ToString(), lines.Value.ToString()) { Rendered = false });
        return entries;
    }

    /// <summary>One "path&lt;TAB&gt;value" per line (a carriage return before the newline dropped, empty lines skipped), without a string per line.</summary>
    private ref struct EntryLines(ReadOnlySpan<char> text)
    {
        private ReadOnlySpan<char> _rest = text;

        public ReadOnlySpan<char> Key { get; private set; }
        public ReadOnlySpan<char> Value { get; private set; }

        public bool MoveNext()
        {
            while (!_rest.IsEmpty)
            {
                var newline = _rest.IndexOf('\n');
                var line = (newline < 0 ? _rest : _rest[..newline]).TrimEnd('\r');
                _rest = newline < 0 ? default : _rest[(newline + 1)..];
                if (line.IsEmpty) continue;
                var tab = line.IndexOf('\t');
                if (tab < 0) throw new ArgumentOutOfRangeException(nameof(text), "A QubesDB line without a tab.");
                Key = line[..tab];
                Value = line[(tab + 1)..];
                return true;
            }
            return false;
        }
    }

    private readonly record struct Entry(string Key, string Value, int Order);

    public void Replace(IEnumerable<string> subtreesToClear, IReadOnlyList<QubesDbEntry> entries)
    {
        using var _ = FileLock.Acquire(FileLock.PathFor(path));
        char[]? rented = null;
        try
        {
            var exists = File.Exists(path);
            var before = exists ? ReadText(path, out rented) : default;
            var clear = subtreesToClear.ToList();
            // The old keys outside the cleared subtrees (a network qube of a 10,000-rule client holds 10,000 keys in
            // them: those are skipped without a string each), then the new entries; sorted by key once, and of a key
            // given more than once the last one kept.
            var all = new List<Entry>(entries.Count + 16);
            var lines = new EntryLines(before);
            while (lines.MoveNext())
                if (!IsCleared(lines.Key, clear)) all.Add(new(lines.Key.ToString(), lines.Value.ToString(), all.Count));
            foreach (var e in entries) all.Add(new(e.Path, e.Value, all.Count));
            var sorted = SortByKeyThenOrder(all);
            // As qubesd's reload, running it again changes nothing: nothing to write (compared line by line, no new file text).
            var kept = 0;
            var same = exists;
            var at = 0;
            for (var i = 0; i < sorted.Length; i++)
            {
                if (i + 1 < sorted.Length && sorted[i + 1].Key == sorted[i].Key) continue;
                sorted[kept++] = sorted[i];
                if (same) same = IsLineAt(before, ref at, sorted[i]);
            }
            if (same && at == before.Length) return;
            var sb = new StringBuilder();
            for (var i = 0; i < kept; i++) sb.Append(sorted[i].Key).Append('\t').Append(sorted[i].Value).Append('\n');
            AtomicFile.WriteAllText(path, sb.ToString());
        }
        finally
        {
            if (rented is not null) System.Buffers.ArrayPool<char>.Shared.Return(rented);
        }
    }

    // The file's text as File.ReadAllText decodes it; plain UTF-8 (no byte order mark) into a pooled array, so a
    // 10,000-key file is no new string on the large object heap.
    private static ReadOnlySpan<char> ReadText(string file, out char[]? rented)
    {
        rented = null;
        using var bytes = PooledBytes.ReadFile(file);
        if ((bytes.Length > 0 && bytes.Span[0] is 0xEF or 0xFE or 0xFF or 0x00) || !System.Text.Unicode.Utf8.IsValid(bytes.Span))
            return File.ReadAllText(file);
        rented = System.Buffers.ArrayPool<char>.Shared.Rent(Math.Max(bytes.Length, 1));
        return rented.AsSpan(0, Encoding.UTF8.GetChars(bytes.Span, rented));
    }

    private static int ByKeyThenOrder(Entry a, Entry b)
    {
        var byKey = string.CompareOrdinal(a.Key, b.Key);
        return byKey != 0 ? byKey : a.Order.CompareTo(b.Order);
    }

    // A merge of the ascending runs: what QubesDbRenderer gives is a few long runs (the numbered rules between
    // the policy key and the commit marker), so this takes a few comparisons per entry, not a full sort's log n.
    private static Entry[] SortByKeyThenOrder(List<Entry> entries)
    {
        var items = entries.ToArray();
        var runs = new List<int> { 0 };
        for (var i = 1; i < items.Length; i++)
            if (ByKeyThenOrder(items[i - 1], items[i]) > 0) runs.Add(i);
        if (runs.Count > 32)
        {
            Array.Sort(items, ByKeyThenOrder);
            return items;
        }
        runs.Add(items.Length);
        var other = new Entry[items.Length];
        while (runs.Count > 2)
        {
            // Merge runs pairwise from items into other, then swap.
            var merged = new List<int> { 0 };
            for (var r = 0; r + 1 < runs.Count; r += 2)
            {
                var (a, mid, end) = (runs[r], runs[r + 1], r + 2 < runs.Count ? runs[r + 2] : runs[r + 1]);
                int i = a, j = mid, k = a;
                while (i < mid && j < end) other[k++] = ByKeyThenOrder(items[i], items[j]) <= 0 ? items[i++] : items[j++];
                while (i < mid) other[k++] = items[i++];
                while (j < end) other[k++] = items[j++];
                merged.Add(end);
            }
            (items, other) = (other, items);
            runs = merged;
        }
        return items;
    }

    private static bool IsCleared(ReadOnlySpan<char> key, List<string> clear)
    {
        foreach (var prefix in clear)
            if (key.StartsWith(prefix, StringComparison.Ordinal)) return true;
        return false;
    }

    // True when text holds "key<TAB>value<LF>" at position at (which moves past it).
    private static bool IsLineAt(ReadOnlySpan<char> text, ref int at, Entry entry)
    {
        var length = entry.Key.Length + entry.Value.Length + 2;
        if (at + length > text.Length) return false;
        var line = text.Slice(at, length);
        if (!line.StartsWith(entry.Key, StringComparison.Ordinal) || line[entry.Key.Length] != '\t'
            || !line[(entry.Key.Length + 1)..^1].SequenceEqual(entry.Value) || line[^1] != '\n') return false;
        at += length;
        return true;
    }
}
