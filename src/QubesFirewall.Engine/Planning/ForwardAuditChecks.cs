using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text.RegularExpressions;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Scripts;

namespace QubesFirewall.Engine.Planning;

/// <summary>
/// The Test-QubeFirewall checks about port forwards. Their findings belong to the forward's target (the
/// qube whose <c>qubesfirewall.forward.*</c> feature declares it, where Get-QubePortForward shows it), and
/// name the hop concerned in the message.
/// </summary>
public static partial class ForwardAuditChecks
{
    /// <summary>A hop (or the target) is a disposable, or a disposable template: its /rw/config is not its own.</summary>
    public const string DisposableHop = "ForwardDisposableHop";

    /// <summary>A hop (or the target) has R4.3's custom-persist on: the /rw/config hooks do not run at its start.</summary>
    public const string CustomPersistHop = "ForwardCustomPersist";

    /// <summary>A declared forward whose rules a qube on the way does not persist (or persists in another version).</summary>
    public const string MissingPart = "ForwardMissingPart";

    /// <summary>Forward rules in a qube's hook file that no declaration produces.</summary>
    public const string UndeclaredPart = "ForwardUndeclaredPart";

    /// <summary>The three checks, in the order their findings come out.</summary>
    public static IReadOnlyList<IAuditCheck> All { get; } = [new ForwardDisposableHopCheck(), new ForwardCustomPersistCheck(), new ForwardPartsCheck()];

    /// <summary>The role of a qube in a chain: <c>hop 2 of 2</c> or <c>the target</c>.</summary>
    internal static string RoleIn(NetworkChain chain, Qube qube) =>
        qube.Name == chain.Target.Name ? "the target"
        : $"hop {(chain.Hops.Select(h => h.Name).ToList().IndexOf(qube.Name) + 1).ToString(CultureInfo.InvariantCulture)} of {chain.Hops.Count.ToString(CultureInfo.InvariantCulture)}";

    /// <summary>The qubes that carry a part of the forward: each hop, then the target.</summary>
    internal static IEnumerable<Qube> PartsOf(NetworkChain chain) => chain.Hops.Select(h => h.Qube).Append(chain.Target);

    /// <summary>Re-applying a declared forward rewrites the file of every qube on its way from the declarations.</summary>
    internal static string ReapplyCommand(QubesInventory inventory, PortForward f, NetworkChain? chain) =>
        $"Get-QubePortForward -VMName {f.VMName} -Port {f.Port.ToString(CultureInfo.InvariantCulture)} -Protocol {f.Protocol} | Add-QubePortForward" +
        (chain is not null && PartsOf(chain).Any(q => QubesFacts.IsDisposable(q)) ? " -Force" : "");

    /// <summary>What the forward checks share for one audit: the declarations, their chains, the expected and stored rule lines.</summary>
    internal sealed class Data
    {
        private static readonly ConditionalWeakTable<AuditContext, Data> Cache = new();
        private readonly AuditContext _context;
        private readonly Dictionary<string, HashSet<string>> _expected = new(StringComparer.Ordinal);
        private readonly Dictionary<string, (string Where, HashSet<string> Lines)> _stored = new(StringComparer.Ordinal);

        private Data(AuditContext context)
        {
            _context = context;
            Declarations = PortForwardDeclaration.ReadAll(context.Inventory, networkedOnly: true);
            var valid = Declarations.Where(d => d.Forward is not null).Select(d => d.Forward!).ToList();
            Layout = ForwardLayout.Build(context.Inventory, valid, new List<string>());
            foreach (var f in valid)
                Chains[(f.VMName, f.FeatureName)] = PortForwardPlanner.TryResolve(context.Inventory, f, out var chain, out _) ? chain : null;
        }

        public static Data Of(AuditContext context) => Cache.GetValue(context, c => new Data(c));

        public IReadOnlyList<PortForwardDeclaration> Declarations { get; }

        public ForwardLayout Layout { get; }

        /// <summary>The chain of each valid declaration (null when it cannot be resolved now, so nothing is generated for it).</summary>
        public Dictionary<(string VMName, string Feature), NetworkChain?> Chains { get; } = [];

        /// <summary>The valid forwards declared on a qube, with their chains.</summary>
        public IEnumerable<(PortForward Forward, NetworkChain? Chain)> ForwardsOf(Qube qube) =>
            Declarations.Where(d => d.VMName == qube.Name && d.Forward is not null).Select(d => (d.Forward!, Chains[(d.VMName, d.FeatureName)]));

        /// <summary>The forward rules the declarations give the qube's script (<c>add rule ... qubesfw-...</c> lines).</summary>
        public HashSet<string> Expected(Qube qube)
        {
            if (!_expected.TryGetValue(qube.Name, out var lines))
                _expected[qube.Name] = lines = RuleLines(NftForwardScript.Transaction(Layout.For(qube)));
            return lines;
        }

        /// <summary>The forward rules the qube's hook file holds (its part of a disposable template's shared block), and where that file is.</summary>
        public (string Where, HashSet<string> Lines) Stored(Qube qube)
        {
            if (_stored.TryGetValue(qube.Name, out var known)) return known;
            var inventory = _context.Inventory;
            var storage = ForwardPersistence.StorageOf(inventory, qube);
            var path = ForwardPersistence.HookPath(qube);
            var where = storage.Name == qube.Name ? $"{qube.Name}:{path}" : $"{storage.Name}:{path} (kept there for the disposable {qube.Name})";
            // the inter-qube links' section has guarded parts and qubesfw-link-* rules of its own: not forwards
            var body = LinkPersistence.Without(ManagedBlock.Extract(_context.ReadQubeFile!(storage.Name, path)));
            var result = (where, RuleLines(SectionFor(body, qube.Name)));
            _stored[qube.Name] = result;
            return result;
        }

        // A block shared by the disposables of a template has one guarded part per qube (ForwardPersistence.BlockBody).
        private static string SectionFor(string body, string qube)
        {
            var guard = "if [ \"$(qubesdb-read /name 2>/dev/null)\" = " + ShellQuote.Single(qube) + " ]; then\n";
            var at = body.IndexOf(guard, StringComparison.Ordinal);
            if (at >= 0)
            {
                var rest = body[(at + guard.Length)..];
                var end = rest.IndexOf("\nfi\n", StringComparison.Ordinal);
                return end < 0 ? rest : rest[..(end + 1)];
            }
            return body.Contains("if [ \"$(qubesdb-read /name 2>/dev/null)\" = ", StringComparison.Ordinal) ? "" : body;
        }

        private static HashSet<string> RuleLines(string text) =>
            text.Split('\n').Where(l => l.StartsWith("add rule ip qubes qubesfw-", StringComparison.Ordinal) || l.StartsWith("add rule ip6 qubes qubesfw-", StringComparison.Ordinal))
                .ToHashSet(StringComparer.Ordinal);
    }

    /// <summary>The forward a generated rule belongs to, from its comment <c>"tcp/443 to work"</c>.</summary>
    internal static bool TryParseRuleComment(string line, out ForwardProtocol protocol, out int port, out string target)
    {
        protocol = default;
        port = 0;
        target = "";
        var m = RuleComment().Match(line);
        if (!m.Success || !int.TryParse(m.Groups[2].Value, NumberStyles.None, CultureInfo.InvariantCulture, out port)) return false;
        protocol = m.Groups[1].Value == "tcp" ? ForwardProtocol.Tcp : ForwardProtocol.Udp;
        target = m.Groups[3].Value;
        return true;
    }

    [GeneratedRegex(@" comment ""(tcp|udp)/([0-9]{1,5}) to ([A-Za-z0-9_.-]{1,31})""\z", RegexOptions.CultureInvariant)]
    private static partial Regex RuleComment();
}

/// <summary>
/// A forward whose hop (or target) is a disposable: its /rw is a fresh copy of its disposable template's at
/// each start, so its part lives in the template's file, shared with every disposable of that template (and
/// an unnamed disposable is destroyed at shutdown). A disposable template on the way passes its own part to
/// every disposable started from it.
/// </summary>
public sealed class ForwardDisposableHopCheck : IAuditCheck
{
    public string Name => "forward-disposable-hop";

    public IEnumerable<AuditFinding> Run(AuditContext context, Qube qube)
    {
        var data = ForwardAuditChecks.Data.Of(context);
        var inventory = context.Inventory;
        foreach (var (forward, chain) in data.ForwardsOf(qube))
        {
            if (chain is null) continue;
            foreach (var part in ForwardAuditChecks.PartsOf(chain))
            {
                var role = ForwardAuditChecks.RoleIn(chain, part);
                var path = ForwardPersistence.HookPath(part);
                if (QubesFacts.IsDisposable(part))
                {
                    var storage = ForwardPersistence.StorageOf(inventory, part);
                    var autoCleanup = part.Properties.TryGetValue("auto_cleanup", out var ac) && ac.Equals("True", StringComparison.OrdinalIgnoreCase);
                    var siblings = inventory.Qubes.Where(q => QubesFacts.IsDisposable(q) && q.Template == storage.Name && q.Name != part.Name).Select(q => q.Name).ToList();
                    yield return new AuditFinding(AuditSeverity.Warning, qube.Name, ForwardAuditChecks.DisposableHop, null,
                        $"{forward.Text} ({forward.FeatureName}) passes through '{part.Name}' ({role}), a disposable of '{storage.Name}': its /rw is a fresh copy of {storage.Name}'s at each start, " +
                        $"so its part of the forward lives in {storage.Name}:{path} and comes back only while that file keeps it" +
                        (siblings.Count > 0 ? $"; the other disposables of {storage.Name} ({string.Join(", ", siblings)}) get the file too (each part runs only in the qube it names)" : "") +
                        (autoCleanup ? $". '{part.Name}' is also removed when it shuts down (auto_cleanup), and the forward with it" : "") + ".",
                        $"Make '{part.Name}' a regular qube (qvm-create --class AppVM{(part.ProvidesNetwork ? " --property provides_network=True" : "")} with the same template, then move its clients or services to it and run {ForwardAuditChecks.ReapplyCommand(inventory, forward, chain)}); " +
                        $"or keep it, and after any change of {storage.Name}'s /rw/config check its part with Export-QubeFirewallScript -VMName {part.Name}.");
                }
                else if (part.TemplateForDispVMs)
                {
                    var disposables = inventory.Qubes.Where(q => QubesFacts.IsDisposable(q) && q.Template == part.Name).Select(q => q.Name).ToList();
                    yield return new AuditFinding(AuditSeverity.Warning, qube.Name, ForwardAuditChecks.DisposableHop, null,
                        $"{forward.Text} ({forward.FeatureName}) passes through '{part.Name}' ({role}), a disposable template (template_for_dispvms): every disposable started from it gets a copy of its {path}, " +
                        $"this forward's part included, and runs it at start" + (disposables.Count > 0 ? $" (now: {string.Join(", ", disposables)})" : "") + ".",
                        $"Use a qube that is not a disposable template on the way (qvm-prefs {part.Name} template_for_dispvms False, if no disposable needs it), then run {ForwardAuditChecks.ReapplyCommand(inventory, forward, chain)}.");
                }
            }
        }
    }
}

/// <summary>A forward whose hop (or target) has R4.3's custom-persist on: Qubes skips rc.local and qubes-firewall-user-script there.</summary>
public sealed class ForwardCustomPersistCheck : IAuditCheck
{
    public string Name => "forward-custom-persist";

    public IEnumerable<AuditFinding> Run(AuditContext context, Qube qube)
    {
        var data = ForwardAuditChecks.Data.Of(context);
        foreach (var (forward, chain) in data.ForwardsOf(qube))
        {
            if (chain is null) continue;
            foreach (var part in ForwardAuditChecks.PartsOf(chain))
            {
                if (!ForwardPersistence.HasCustomPersist(context.Inventory, part)) continue;
                yield return new AuditFinding(AuditSeverity.Warning, qube.Name, ForwardAuditChecks.CustomPersistHop, null,
                    $"{forward.Text} ({forward.FeatureName}) passes through '{part.Name}' ({ForwardAuditChecks.RoleIn(chain, part)}), which has the R4.3 custom-persist service on: " +
                    $"Qubes does not run its {ForwardPersistence.HookPath(part)} at start, so its part of the forward is lost when '{part.Name}' restarts.",
                    ForwardPersistence.CustomPersistFix(part));
            }
        }
    }
}

/// <summary>
/// A forward missing one of its parts: the hook file of a qube on the way (or of the target) does not hold
/// the rules its declaration gives it (never written, a failed run, a file restored from a backup, a
/// declaration edited by hand), or holds forward rules for the qube that no declaration gives any more.
/// Compares the stored rule lines with the ones the declarations generate, qube by qube.
/// </summary>
public sealed class ForwardPartsCheck : IAuditCheck
{
    public string Name => "forward-parts";

    public IEnumerable<AuditFinding> Run(AuditContext context, Qube qube)
    {
        if (context.ReadQubeFile is null) yield break;
        var data = ForwardAuditChecks.Data.Of(context);
        var inventory = context.Inventory;
        var declared = data.ForwardsOf(qube).ToList();
        // everything upstream (hops of its external and internal forwards), outermost first, then the qube itself (its input rules)
        var candidates = inventory.UpstreamOf(qube.Name).Reverse().ToList();
        if (declared.Count > 0 || qube.ProvidesNetwork) candidates.Add(qube);

        foreach (var holder in candidates)
        {
            string where;
            HashSet<string> stored;
            QubesFirewallException? failure = null;
            try
            {
                (where, stored) = data.Stored(holder);
            }
            catch (QubesFirewallException ex)
            {
                (where, stored) = ("", []);
                failure = ex;
            }
            if (failure is not null)
            {
                // Never skipped in silence: a file that cannot be read or judged is a finding. A qube answering what
                // cannot be a hook file (too large, not a file mode) is an error; a halted qube only could not be asked.
                var hostile = failure.Kind == FailureKind.InvalidData;
                if (declared.Count > 0 || hostile)
                    yield return new AuditFinding(hostile ? AuditSeverity.Error : AuditSeverity.Info, qube.Name, AuditChecks.CheckFailed, null,
                        $"The port forward parts in '{holder.Name}' could not be checked{(declared.Count == 0 ? " (nor whether it holds rules no declaration gives)" : "")}: {failure.Message}",
                        hostile
                            ? $"Look at that file in '{holder.Name}' (a compromised or broken qube can answer anything); once it is a hook file again, run Test-QubeFirewall -VMName {qube.Name} again."
                            : $"Start '{holder.Name}' (or fix what the message says), then run Test-QubeFirewall -VMName {qube.Name} again.");
                continue;
            }
            var expected = data.Expected(holder);
            var keys = expected.Concat(stored)
                .Select(l => ForwardAuditChecks.TryParseRuleComment(l, out var p, out var n, out var t) ? (Ok: t == qube.Name, Protocol: p, Port: n) : (Ok: false, Protocol: default, Port: 0))
                .Where(k => k.Ok).Select(k => (k.Protocol, k.Port)).Distinct().OrderBy(k => k.Port).ThenBy(k => k.Protocol).ToList();
            foreach (var (protocol, port) in keys)
            {
                bool Mine(string l) => ForwardAuditChecks.TryParseRuleComment(l, out var p, out var n, out var t) && t == qube.Name && p == protocol && n == port;
                var want = expected.Where(Mine).ToHashSet(StringComparer.Ordinal);
                var have = stored.Where(Mine).ToHashSet(StringComparer.Ordinal);
                var missing = want.Count(l => !have.Contains(l));
                var extra = have.Count(l => !want.Contains(l));
                if (missing == 0 && extra == 0) continue;
                var text = $"{(protocol == ForwardProtocol.Tcp ? "tcp" : "udp")}/{port.ToString(CultureInfo.InvariantCulture)}";
                var declaration = declared.FirstOrDefault(d => d.Forward.Protocol == protocol && d.Forward.Port == port);
                if (declaration.Forward is { } forward)
                {
                    var what = want.Count == 0
                        ? $"holds rules for it, but its declaration gives '{holder.Name}' none now{(declaration.Chain is null ? " (its network chain cannot be resolved)" : "")}"
                        : have.Count == 0 ? "does not hold its part"
                        : $"holds another version of its part ({missing.ToString(CultureInfo.InvariantCulture)} rule{(missing == 1 ? "" : "s")} missing, {extra.ToString(CultureInfo.InvariantCulture)} not declared)";
                    yield return new AuditFinding(AuditSeverity.Error, qube.Name, ForwardAuditChecks.MissingPart, null,
                        $"{forward.Text} is declared ({forward.FeatureName}), but {where} {what}. At {holder.Name}'s next start the forward does not work as declared.",
                        ForwardAuditChecks.ReapplyCommand(inventory, forward, declaration.Chain) + " (rewrites the file of every qube on the way from the declaration)");
                }
                else
                {
                    var feature = PortForwardFeature.NameFor(protocol, port);
                    var invalid = data.Declarations.FirstOrDefault(d => d.VMName == qube.Name && d.Forward is null &&
                        PortForwardFeature.TryParseName(d.FeatureName, out var p, out var n, lenient: true) && p == protocol && n == port);
                    var other = data.Declarations.Where(d => d.Forward is not null && data.Chains[(d.VMName, d.FeatureName)] is { } c && ForwardAuditChecks.PartsOf(c).Any(q => q.Name == holder.Name))
                        .Select(d => d.Forward!).FirstOrDefault();
                    var why = invalid is not null
                        ? $"its declaration {invalid.FeatureName} cannot be read ({invalid.Problem?.TrimEnd('.')})"
                        : $"no declaration gives it (no feature {feature} on {qube.Name})";
                    var fix = invalid is not null
                        ? $"Remove-QubePortForward -VMName {qube.Name} -Port {port.ToString(CultureInfo.InvariantCulture)} -Protocol {protocol}, then add it again with Add-QubePortForward if you want it"
                        : other is not null
                            ? $"{ForwardAuditChecks.ReapplyCommand(inventory, other, data.Chains[(other.VMName, other.FeatureName)])} (re-applying a forward that crosses {holder.Name} rewrites its file from the declarations)"
                            // derived from the file's content: never a command that opens anything; it rebuilds the files without the rules
                            : $"Remove-QubePortForward -VMName {qube.Name} -Port {port.ToString(CultureInfo.InvariantCulture)} -Protocol {protocol} -Confirm:$false " +
                              "(no declaration gives these rules: it rebuilds the file of every qube on the way from the declarations, without them; it opens nothing)";
                    yield return new AuditFinding(AuditSeverity.Error, qube.Name, ForwardAuditChecks.UndeclaredPart, null,
                        $"{where} holds port forward rules for {text} to '{qube.Name}' ({extra.ToString(CultureInfo.InvariantCulture)} rule{(extra == 1 ? "" : "s")}), but {why}: they open the port at {holder.Name}'s next start, and Get-QubePortForward does not show it.",
                        fix);
                }
            }
        }
    }
}
