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
    /// <summary>A hop (or the target) has R4.3's custom-persist on: the /rw/config hooks do not run at its start.</summary>
    public const string CustomPersistHop = "ForwardCustomPersist";

    /// <summary>
    /// Forward or link rules in a qube's hook file: the managed block an earlier version wrote, loaded again at the qube's next start
    /// beside what its agent applies (forwards and links now reach qubes only as agent keys).
    /// </summary>
    public const string UndeclaredPart = "ForwardUndeclaredPart";

    /// <summary>The two checks, in the order their findings come out.</summary>
    public static IReadOnlyList<IAuditCheck> All { get; } = [new ForwardCustomPersistCheck(), new ForwardPartsCheck()];

    /// <summary>The role of a qube in a chain: <c>hop 2 of 2</c> or <c>the target</c>.</summary>
    internal static string RoleIn(NetworkChain chain, Qube qube) =>
        qube.Name == chain.Target.Name ? "the target"
        : $"hop {(chain.Hops.Select(h => h.Name).ToList().IndexOf(qube.Name) + 1).ToString(CultureInfo.InvariantCulture)} of {chain.Hops.Count.ToString(CultureInfo.InvariantCulture)}";

    /// <summary>The qubes that carry a part of the forward: each hop, then the target.</summary>
    internal static IEnumerable<Qube> PartsOf(NetworkChain chain) => chain.Hops.Select(h => h.Qube).Append(chain.Target);

    /// <summary>What the forward checks share for one audit: the declarations, their chains, the expected and stored rule lines.</summary>
    internal sealed class Data
    {
        private static readonly ConditionalWeakTable<AuditContext, Data> Cache = new();
        private readonly AuditContext _context;
        private readonly Dictionary<string, (string Where, HashSet<string> Lines, bool Links)> _stored = new(StringComparer.Ordinal);
        private readonly Dictionary<(string Qube, string Path), QubesFirewallException> _unreadable = [];

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

        /// <summary>
        /// The forward rules the qube's hook file holds (its part of a disposable template's shared block), where that file is, and
        /// whether its block holds an inter-qube links section: what an earlier version wrote.
        /// </summary>
        public (string Where, HashSet<string> Lines, bool Links) Stored(Qube qube)
        {
            if (_stored.TryGetValue(qube.Name, out var known)) return known;
            var inventory = _context.Inventory;
            var storage = HookFiles.StorageOf(inventory, qube);
            var path = HookFiles.HookPath(qube);
            var where = storage.Name == qube.Name ? $"{qube.Name}:{path}" : $"{storage.Name}:{path} (kept there for the disposable {qube.Name})";
            // the inter-qube links' section has guarded parts and qubesfw-link-* rules of its own: not forwards
            // a file that could not be read is not asked for again (a halted qube stays halted for the audit)
            if (_unreadable.TryGetValue((storage.Name, path), out var failed)) throw failed;
            string? content;
            try
            {
                content = _context.ReadQubeFile!(storage.Name, path);
            }
            catch (QubesFirewallException ex)
            {
                _unreadable[(storage.Name, path)] = ex;
                throw;
            }
            var block = ManagedBlock.Extract(content);
            var body = LinkPersistence.Without(block);
            var result = (where, RuleLines(SectionFor(body, qube.Name)), LinkPersistence.Extract(block).Length > 0);
            _stored[qube.Name] = result;
            return result;
        }

        // A block shared by the disposables of a template has one guarded part per qube (HookFiles.BlockBody).
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
                if (!HookFiles.HasCustomPersist(context.Inventory, part)) continue;
                yield return new AuditFinding(AuditSeverity.Warning, qube.Name, ForwardAuditChecks.CustomPersistHop, null,
                    $"{forward.Text} ({forward.FeatureName}) passes through '{part.Name}' ({ForwardAuditChecks.RoleIn(chain, part)}), which has the R4.3 custom-persist service on: " +
                    $"Qubes does not run its /rw/config hooks at start, so its QubesFirewall agent does not start and its part of the forward is lost when '{part.Name}' restarts. " +
                    HookFiles.CustomPersistFix(part),
                    null);
            }
        }
    }
}

/// <summary>
/// Test-QubeFirewall -Deep: leftovers of the hook files earlier versions wrote (read in the qubes): forward rules for the qube in the managed block of a hook file on its way
/// (or its own), and an inter-qube links section in its own. Forwards and links now reach qubes only as agent keys, so such a
/// block loads old rules again at the qube's next start, beside the agent's. The fix, Install-QubeFirewallAgent, removes the
/// block (the user's own lines stay byte for byte). Whether the agent keys match the declarations is <see cref="Agent.AgentAuditCheck"/>'s.
/// </summary>
public sealed class ForwardPartsCheck : IAuditCheck
{
    public string Name => "forward-parts";

    public IEnumerable<AuditFinding> Run(AuditContext context, Qube qube)
    {
        if (!context.Deep || context.ReadQubeFile is null) yield break; // -Deep only: reads the hook files in the qubes
        var data = ForwardAuditChecks.Data.Of(context);
        var inventory = context.Inventory;
        var declared = data.ForwardsOf(qube).ToList();
        // everything upstream (hops of its forwards), outermost first, then the qube itself (its input rules)
        var candidates = inventory.UpstreamOf(qube.Name).Reverse().ToList();
        candidates.Add(qube);

        foreach (var holder in candidates)
        {
            string where;
            HashSet<string> stored;
            bool links;
            QubesFirewallException? failure = null;
            try
            {
                (where, stored, links) = data.Stored(holder);
            }
            catch (QubesFirewallException ex)
            {
                (where, stored, links) = ("", [], false);
                failure = ex;
            }
            if (failure is not null)
            {
                // Never skipped in silence: a file that cannot be read or judged is a finding. A qube answering what
                // cannot be a hook file (too large, not a file mode) is an error; a halted qube only could not be asked.
                var hostile = failure.Kind == FailureKind.InvalidData;
                if (declared.Count > 0 || hostile)
                    yield return new AuditFinding(hostile ? AuditSeverity.Error : AuditSeverity.Info, qube.Name, AuditChecks.CheckFailed, null,
                        $"Whether '{holder.Name}' still holds port forward rules of an earlier version could not be checked: {failure.Message} " +
                        (hostile
                            ? $"Look at that file in '{holder.Name}' (a compromised or broken qube can answer anything); once it is a hook file again, run Test-QubeFirewall -VMName {qube.Name} again."
                            : $"Start '{holder.Name}' (or fix what the message says), then run Test-QubeFirewall -VMName {qube.Name} again."),
                        null);
                continue;
            }
            var fix = Agent.AgentDelivery.InstallCommand([holder.Name]);
            var keys = stored
                .Select(l => ForwardAuditChecks.TryParseRuleComment(l, out var p, out var n, out var t) ? (Ok: t == qube.Name, Protocol: p, Port: n) : (Ok: false, Protocol: default, Port: 0))
                .Where(k => k.Ok).Select(k => (k.Protocol, k.Port)).Distinct().OrderBy(k => k.Port).ThenBy(k => k.Protocol).ToList();
            foreach (var (protocol, port) in keys)
            {
                var count = stored.Count(l => ForwardAuditChecks.TryParseRuleComment(l, out var p, out var n, out var t) && t == qube.Name && p == protocol && n == port);
                var text = $"{(protocol == ForwardProtocol.Tcp ? "tcp" : "udp")}/{port.ToString(CultureInfo.InvariantCulture)}";
                var isDeclared = declared.Any(d => d.Forward.Protocol == protocol && d.Forward.Port == port);
                yield return new AuditFinding(AuditSeverity.Error, qube.Name, ForwardAuditChecks.UndeclaredPart, null,
                    $"{where} holds port forward rules for {text} to '{qube.Name}' ({count.ToString(CultureInfo.InvariantCulture)} rule{(count == 1 ? "" : "s")}) in the managed block an earlier version wrote: " +
                    $"they are loaded again at {holder.Name}'s next start, beside what its agent applies{(isDeclared ? "" : ", and no declaration gives them (Get-QubePortForward does not show them)")}. " +
                    "The fix installs the agent there, which removes that block (your own lines in the file stay byte for byte); it opens nothing.",
                    fix);
            }
            if (links && holder.Name == qube.Name)
                yield return new AuditFinding(AuditSeverity.Error, qube.Name, ForwardAuditChecks.UndeclaredPart, null,
                    $"{where} holds inter-qube link rules in the managed block an earlier version wrote: they are loaded again at {holder.Name}'s next start, beside what its agent applies. " +
                    "The fix installs the agent there, which removes that block (your own lines in the file stay byte for byte); it opens nothing.",
                    fix);
        }
    }
}
