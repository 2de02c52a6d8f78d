using QubesFirewall.Engine;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Io;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Tests;

[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]

public sealed class OfflineRootTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "qfw-engine-" + Guid.NewGuid().ToString("N")[..10]);

    public OfflineRootTests() => CopyDirectory(SamplePath(), _root);

    public void Dispose() => Directory.Delete(_root, recursive: true);

    internal static string SamplePath()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "QubesFirewall.slnx"))) return Path.Combine(dir.FullName, "examples", "qubes-root");
        throw new InvalidOperationException("repository root not found");
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.EnumerateFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        foreach (var d in Directory.EnumerateDirectories(from)) CopyDirectory(d, Path.Combine(to, Path.GetFileName(d)));
    }

    private string WorkFirewall => Path.Combine(_root, "appvms", "work", "firewall.xml");

    [Fact]
    public void The_sample_firewall_files_written_by_qubesd_round_trip_byte_for_byte()
    {
        var text = File.ReadAllText(WorkFirewall);
        var doc = FirewallXml.Load(WorkFirewall);
        Assert.Equal(2, doc.Version);
        Assert.Equal(text, FirewallXml.Render(doc.Rules, DateTimeOffset.UtcNow));
    }

    [Fact]
    public async Task Two_writers_never_lose_each_others_rules()
    {
        const int perWriter = 60;
        var writers = Enumerable.Range(0, 2).Select(w => Task.Run(() =>
        {
            using var backend = new OfflineRoot(_root);
            for (var i = 0; i < perWriter; i++)
            {
                var rule = RuleText.Parse($"action=accept dst4=10.{w + 201}.{i / 250}.{i % 250 + 1} proto=tcp dstports=443");
                var change = FirewallPlanner.PlanInsert(backend, "work", [new RuleInsertion(rule)], DateTimeOffset.UtcNow);
                change.Apply(backend);
            }
        })).ToArray();
        await Task.WhenAll(writers);
        var rules = FirewallXml.Load(WorkFirewall).Rules;
        Assert.Equal(perWriter, rules.Count(r => r.DstHost?.Value.StartsWith("10.201.", StringComparison.Ordinal) == true));
        Assert.Equal(perWriter, rules.Count(r => r.DstHost?.Value.StartsWith("10.202.", StringComparison.Ordinal) == true));
        Assert.True(rules[^1].IsCatchAll);
    }

    [Fact]
    public async Task Atomic_write_replaces_the_file_whole_and_leaves_no_temporary_files()
    {
        var path = Path.Combine(_root, "atomic", "file.txt");
        AtomicFile.WriteAllText(path, "old\n", UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var readers = Task.Run(() =>
        {
            for (var i = 0; i < 2000; i++)
            {
                var content = File.ReadAllText(path);
                Assert.True(content is "old\n" || content.StartsWith("new", StringComparison.Ordinal), $"torn read: '{content}'");
            }
        });
        for (var i = 0; i < 200; i++) AtomicFile.WriteAllText(path, "new " + new string('x', i * 50) + "\n");
        await readers;
        Assert.Equal(["file.txt"], Directory.GetFiles(Path.GetDirectoryName(path)!).Select(Path.GetFileName));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
    }

    [Fact]
    public void A_refused_edit_leaves_the_file_byte_identical()
    {
        var before = File.ReadAllBytes(WorkFirewall);
        using var backend = new OfflineRoot(_root);
        var doc = backend.GetFirewall("work");
        Assert.Throws<QubesFirewallException>(() => backend.ApplyFirewallEdit("work", FirewallEdit.Remove([new RuleRemoval(0, "action=drop")]), doc));
        Assert.Equal(before, File.ReadAllBytes(WorkFirewall));
    }

    [Fact]
    public void Sync_renders_into_the_network_qube_and_replaces_the_clients_subtree()
    {
        using var backend = new OfflineRoot(_root);
        var first = backend.SyncFirewall("work");
        Assert.All(first, e => Assert.Equal("sys-firewall", e.QubeName));
        var doc = backend.GetFirewall("work");
        var removals = doc.VisibleAt(DateTimeOffset.UtcNow).Select((r, i) => new RuleRemoval(i, r.Text)).Where(r => r.Number < doc.Rules.Count - 1);
        backend.ApplyFirewallEdit("work", FirewallEdit.Remove(removals), doc);
        var second = backend.SyncFirewall("work");
        Assert.Equal(3, second.Count);
        Assert.Equal(second.Select(e => (e.Path, e.Value)).OrderBy(p => p.Path, StringComparer.Ordinal), backend.ReadQubesDb("sys-firewall").Select(e => (e.Path, e.Value)));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(60)]
    public void Sync_keeps_the_other_keys_sorted_the_last_of_a_repeated_key_and_rewrites_nothing_when_nothing_changed(int shuffled)
    {
        using var backend = new OfflineRoot(_root);
        var ip = backend.GetQube("work").IP;
        var db = Path.Combine(_root, OfflineRoot.StateFolderName, "sys-firewall", "qubesdb.txt");
        Directory.CreateDirectory(Path.GetDirectoryName(db)!);
        // Other keys in no order (as many out of order as given), a repeated key, stale keys of the client.
        var others = Enumerable.Range(0, shuffled).Select(i => ($"/other/{i * 37 % shuffled:D3}", "v" + i)).ToList();
        File.WriteAllText(db, $"/zz/other\tb\r\n\n/qubes-firewall/10.137.0.99/policy\tdrop\n/aa/dup\tfirst\n/qubes-firewall/{ip}/0000\tstale\n" +
            string.Concat(others.Select(o => $"{o.Item1}\t{o.Item2}\n")) + $"/aa/dup\tsecond\n/qubes-firewall/{ip}\told marker\n");
        var entries = backend.SyncFirewall("work");
        var expected = new[] { ("/aa/dup", "second"), ("/qubes-firewall/10.137.0.99/policy", "drop"), ("/zz/other", "b") }
            .Concat(others).Concat(entries.Select(e => (e.Path, e.Value))).OrderBy(p => p.Item1, StringComparer.Ordinal);
        Assert.Equal(string.Concat(expected.Select(p => $"{p.Item1}\t{p.Item2}\n")), File.ReadAllText(db));
        var written = new DateTime(2001, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        File.SetLastWriteTimeUtc(db, written);
        Assert.Equal(entries, backend.SyncFirewall("work"));
        Assert.Equal(written, File.GetLastWriteTimeUtc(db));
    }

    [Fact]
    public void Sync_reads_a_qubesdb_file_with_a_byte_order_mark_as_its_text()
    {
        using var backend = new OfflineRoot(_root);
        var db = Path.Combine(_root, OfflineRoot.StateFolderName, "sys-firewall", "qubesdb.txt");
        backend.SyncFirewall("work");
        File.WriteAllBytes(db, [0xEF, 0xBB, 0xBF, .. File.ReadAllBytes(db)]);
        var written = new DateTime(2001, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        File.SetLastWriteTimeUtc(db, written);
        backend.SyncFirewall("work");
        Assert.Equal(written, File.GetLastWriteTimeUtc(db)); // the same text: nothing written
    }

    [Fact]
    public void Qube_files_stay_under_the_qubes_rw_folder()
    {
        using var backend = new OfflineRoot(_root);
        backend.WriteQubeFile("work", "/rw/config/rc.local", "#!/bin/sh\n", (UnixFileMode)0b111_101_101);
        Assert.Equal("#!/bin/sh\n", backend.ReadQubeFile("work", "/rw/config/rc.local"));
        Assert.Equal("InvalidQubePath", Assert.Throws<QubesFirewallException>(() => backend.ReadQubeFile("work", "/etc/passwd")).ErrorId);
        Assert.Equal("InvalidQubePath", Assert.Throws<QubesFirewallException>(() => backend.WriteQubeFile("work", "/rw/../../x", "", UnixFileMode.UserRead)).ErrorId);
    }
}
