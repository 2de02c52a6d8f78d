using System.Globalization;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Io;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.CrashHarness;

/// <summary>The four kinds of write the crash test interrupts.</summary>
public enum CrashWriteKind
{
    /// <summary>work's firewall.xml through <see cref="OfflineRoot.ApplyFirewallEdit"/> (a locked read-modify-write).</summary>
    FirewallXml,

    /// <summary>A feature of work in qubes.xml through <see cref="OfflineRoot.SetFeature"/>.</summary>
    QubesXmlFeature,

    /// <summary>sys-firewall's QubesDB stand-in (the state folder's qubesdb.txt) through <see cref="OfflineRoot.SyncFirewall"/>.</summary>
    QubesDb,

    /// <summary>The managed block of work's /rw/config/rc.local through <see cref="ManagedBlock.Upsert"/> and <see cref="OfflineRoot.WriteQubeFile"/>.</summary>
    ManagedBlock,
}

/// <summary>
/// One write per kind, identified by a version number: <see cref="Write"/> makes the target hold
/// version <c>n</c> whatever version it held before (so the same command run again after a crash
/// completes the change), and every version has its own content (a counter in a comment, a feature
/// value, the set of unexpired rules, a line of the managed block), so a test can tell exactly which
/// version a file holds.
/// </summary>
public static class CrashWrites
{
    public const string Qube = "work";
    public const string NetVm = "sys-firewall";
    public const string FeatureName = "qubesfirewall.crash-test";
    public const string HookPath = "/rw/config/rc.local";

    /// <summary>Crash rules kept in firewall.xml: version n holds rules n-39..n.</summary>
    public const int Window = 40;

    /// <summary>QubesDB kind: firewall.xml holds this many rules expiring one second apart from <see cref="ExpireBase"/>.</summary>
    public const int ExpiringRules = 100;

    public const long ExpireBase = 4_000_000_000;

    public static CrashWriteKind ParseKind(string text) => text switch
    {
        "firewall-xml" => CrashWriteKind.FirewallXml,
        "qubes-xml-feature" => CrashWriteKind.QubesXmlFeature,
        "qubesdb" => CrashWriteKind.QubesDb,
        "managed-block" => CrashWriteKind.ManagedBlock,
        _ => throw new ArgumentException($"unknown kind '{text}' (firewall-xml, qubes-xml-feature, qubesdb, managed-block)"),
    };

    public static string KindText(CrashWriteKind kind) => kind switch
    {
        CrashWriteKind.FirewallXml => "firewall-xml",
        CrashWriteKind.QubesXmlFeature => "qubes-xml-feature",
        CrashWriteKind.QubesDb => "qubesdb",
        _ => "managed-block",
    };

    /// <summary>The file a kind writes.</summary>
    public static string TargetPath(CrashWriteKind kind, string root) => kind switch
    {
        CrashWriteKind.FirewallXml => Path.Combine(root, "appvms", Qube, "firewall.xml"),
        CrashWriteKind.QubesXmlFeature => Path.Combine(root, "qubes.xml"),
        CrashWriteKind.QubesDb => Path.Combine(root, OfflineRoot.StateFolderName, NetVm, "qubesdb.txt"),
        _ => Path.Combine(root, OfflineRoot.StateFolderName, Qube, HookPath.TrimStart('/')),
    };

    /// <summary>Sets up a copy of the sample root for a kind and writes version 0.</summary>
    public static void Prepare(CrashWriteKind kind, string root)
    {
        using var backend = new OfflineRoot(root);
        switch (kind)
        {
            case CrashWriteKind.FirewallXml:
            {
                var rules = Enumerable.Range(1, 30)
                    .Select(i => RuleText.Parse($"action=accept dst4=192.0.2.{i}/32 proto=tcp dstports={1000 + i} comment=base rule {i}"))
                    .Append(RuleText.Parse("action=drop")).ToList();
                AtomicFile.WriteAllText(TargetPath(kind, root), FirewallXml.Render(rules, DateTimeOffset.UtcNow));
                break;
            }
            case CrashWriteKind.QubesDb:
            {
                var rules = Enumerable.Range(0, ExpiringRules)
                    .Select(i => RuleText.Parse($"action=accept dst4=10.66.{i / 250}.{i % 250 + 1} proto=tcp dstports={2000 + i} expire={ExpireBase + i}"))
                    .Append(RuleText.Parse("action=drop")).ToList();
                AtomicFile.WriteAllText(Path.Combine(root, "appvms", Qube, "firewall.xml"), FirewallXml.Render(rules, DateTimeOffset.UtcNow));
                // Another client of the same network qube: its entries must survive every write.
                backend.SyncFirewall("personal");
                break;
            }
            case CrashWriteKind.ManagedBlock:
                backend.WriteQubeFile(Qube, HookPath,
                    "#!/bin/sh\n# the user's own line before the block\necho before >/dev/null\n" + ManagedBlock.Render(Body(0)) + "# the user's own line after it\nexit 0\n",
                    ManagedBlock.FileMode);
                break;
        }
        Write(kind, root, 0);
    }

    /// <summary>Makes the target hold version <paramref name="version"/> (nothing is written when it already does).</summary>
    public static void Write(CrashWriteKind kind, string root, long version)
    {
        switch (kind)
        {
            case CrashWriteKind.FirewallXml:
            {
                using var backend = new OfflineRoot(root);
                var doc = backend.GetFirewall(Qube);
                var visible = doc.VisibleAt(DateTimeOffset.UtcNow);
                var wanted = WindowRules(version).ToList();
                var wantedTexts = wanted.Select(r => r.Text).ToHashSet(StringComparer.Ordinal);
                var removals = visible.Select((r, i) => (Rule: r, Number: i))
                    .Where(x => x.Rule.Comment?.StartsWith("crash version ", StringComparison.Ordinal) == true && !wantedTexts.Contains(x.Rule.Text))
                    .Select(x => new RuleRemoval(x.Number, x.Rule.Text)).ToList();
                var present = visible.Select(r => r.Text).ToHashSet(StringComparer.Ordinal);
                var insertions = wanted.Where(r => !present.Contains(r.Text)).Select(r => new RuleInsertion(r)).ToList();
                if (removals.Count > 0 || insertions.Count > 0)
                    backend.ApplyFirewallEdit(Qube, new FirewallEdit(insertions, removals), doc);
                break;
            }
            case CrashWriteKind.QubesXmlFeature:
            {
                using var backend = new OfflineRoot(root);
                backend.SetFeature(Qube, FeatureName, "version " + version.ToString(CultureInfo.InvariantCulture));
                break;
            }
            case CrashWriteKind.QubesDb:
            {
                var now = DateTimeOffset.FromUnixTimeSeconds(ExpireBase + version % ExpiringRules);
                using var backend = new OfflineRoot(root, () => now);
                backend.SyncFirewall(Qube);
                break;
            }
            case CrashWriteKind.ManagedBlock:
            {
                using var backend = new OfflineRoot(root);
                var current = backend.ReadQubeFile(Qube, HookPath);
                backend.WriteQubeFile(Qube, HookPath, ManagedBlock.Upsert(current, Body(version)), ManagedBlock.FileMode);
                break;
            }
        }
    }

    /// <summary>
    /// Reads the target with the engine's own reader, as the next command would; throws when it does not
    /// parse. Returns a short description of what it holds.
    /// </summary>
    public static string Read(CrashWriteKind kind, string root)
    {
        var path = TargetPath(kind, root);
        switch (kind)
        {
            case CrashWriteKind.FirewallXml:
            {
                var doc = FirewallXml.Load(path);
                if (!doc.FileExists) throw new InvalidDataException("firewall.xml is missing");
                // What loads renders back to the same bytes (the engine writes only the canonical form).
                if (FirewallXml.Render(doc.Rules, DateTimeOffset.UtcNow) != File.ReadAllText(path)) throw new InvalidDataException("firewall.xml does not render back to itself");
                return $"{doc.Rules.Count} rules";
            }
            case CrashWriteKind.QubesXmlFeature:
                return QubesXml.Load(path).Get(Qube).Features[FeatureName];
            case CrashWriteKind.QubesDb:
            {
                using var backend = new OfflineRoot(root);
                var entries = backend.ReadQubesDb(NetVm);
                if (!entries.Any(e => e.Path.StartsWith(QubesDbRenderer.Root + "/", StringComparison.Ordinal))) throw new InvalidDataException("qubesdb.txt has no firewall entries");
                return $"{entries.Count} keys";
            }
            default:
            {
                var content = File.ReadAllText(path);
                if (!ManagedBlock.HasShebang(content)) throw new InvalidDataException("rc.local lost its #! line");
                var body = ManagedBlock.Extract(content) ?? throw new InvalidDataException("rc.local has no managed block");
                return body.Split('\n')[0];
            }
        }
    }

    public static FirewallRule CrashRule(long k) => RuleText.Parse(string.Create(CultureInfo.InvariantCulture,
        $"action=accept dst4=10.{(k >> 16) & 255}.{(k >> 8) & 255}.{k & 255}/32 proto=tcp dstports={1 + k % 65535} comment=crash version {k}"));

    public static IEnumerable<FirewallRule> WindowRules(long version)
    {
        for (var k = Math.Max(1, version - Window + 1); k <= version; k++) yield return CrashRule(k);
    }

    /// <summary>The managed block's body for a version: about 3 KB of shell.</summary>
    public static string Body(long version)
    {
        var v = version.ToString(CultureInfo.InvariantCulture);
        var sb = new System.Text.StringBuilder();
        sb.Append("# crash test version ").Append(v).Append('\n');
        sb.Append("qubesfw_crash_version=").Append(v).Append('\n');
        for (var i = 0; i < 60; i++) sb.Append(": line ").Append(i).Append(" of version ").Append(v).Append('\n');
        return sb.ToString();
    }
}
