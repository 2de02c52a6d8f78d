using System.Globalization;
using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Planning;

/// <summary>How much a finding matters. Sorted Error first (<c>Sort-Object Severity</c>).</summary>
public enum AuditSeverity
{
    /// <summary>Does not do what the rule list says: a rule that never applies, rules nobody enforces, a rule qubesd refuses.</summary>
    Error,
    /// <summary>Works now, but fragile or surprising: host names, /0 networks, a rule about to expire, IPv6 half on.</summary>
    Warning,
    /// <summary>Worth knowing: where rules are enforced, rules unused, expired rules, a list the Qube Manager cannot show.</summary>
    Info,
}

/// <summary>
/// One thing Test-QubeFirewall found about a qube. <see cref="Check"/> names the check (a stable id to
/// filter on), <see cref="Rule"/> is the rule involved (numbered as Get-QubeFirewallRule numbers it),
/// <see cref="Fix"/> a command or action that resolves it (null when there is nothing to do).
/// </summary>
public sealed record AuditFinding(AuditSeverity Severity, string VMName, string Check, QubeFirewallRule? Rule, string Message, string? Fix)
{
    /// <summary>The number of the rule involved, if any.</summary>
    public int? Number => Rule?.Number;

    public override string ToString() => $"{Severity} {VMName}{(Rule is null ? "" : "#" + Rule.Number)} {Check}: {Message}";
}

/// <summary>The check ids <see cref="AuditFinding.Check"/> takes for the built-in checks.</summary>
public static class AuditChecks
{
    public const string EnforcedIn = "EnforcedIn";
    public const string NotEnforced = "NotEnforced";
    public const string NoNetVM = "NoNetVM";
    public const string UnreadableFirewall = "UnreadableFirewall";
    public const string InvalidRule = "InvalidRule";
    public const string DeadRule = "DeadRule";
    public const string HostName = "HostName";
    public const string ZeroPrefix = "ZeroPrefix";
    public const string IPv6Rule = "IPv6Rule";
    public const string IPv6WithoutUplink = "IPv6WithoutUplink";
    public const string Expired = "Expired";
    public const string ExpiresSoon = "ExpiresSoon";
    public const string QubeManagerShape = "QubeManagerShape";
    public const string CheckFailed = "CheckFailed";
}

/// <summary>
/// An audit check: given the context and one qube, what it finds. The built-in checks implement it;
/// so do checks added later (port forwards and inter-qube links whose hop is a disposable or has
/// custom-persist, links missing a part): add them in <c>FirewallAudit.AddExtensionChecks</c> (a
/// partial method another file of the engine may implement) or pass them to <see cref="FirewallAudit.Run"/>.
/// A check must be pure over the context (same context and qube, same findings, in the same order).
/// </summary>
public interface IAuditCheck
{
    /// <summary>A short name, for messages about the check itself.</summary>
    string Name { get; }

    IEnumerable<AuditFinding> Run(AuditContext context, Qube qube);
}

/// <summary>
/// What the audit reads: the inventory, each qube's stored rules (read once each, on first use), the
/// time: dom0 facts only. A deep audit (<see cref="Deep"/>, Test-QubeFirewall -Deep) also has readers that look
/// inside qubes: their /rw hook files (blocks earlier versions left) and their agents' status. Reading through
/// the backend is the caller's business; the audit itself only calls these, and only when deep.
/// </summary>
public sealed class AuditContext
{
    private readonly Func<string, FirewallDocument> _readFirewall;
    private readonly Dictionary<string, FirewallDocument> _firewalls = new(StringComparer.Ordinal);

    public AuditContext(QubesInventory inventory, Func<string, FirewallDocument> readFirewall, DateTimeOffset now, Func<string, string, string?>? readQubeFile = null,
        Func<Qube, AgentStatusReading>? readAgentStatus = null, bool? deep = null)
    {
        Inventory = inventory;
        _readFirewall = readFirewall;
        Now = now;
        Deep = deep ?? (readQubeFile is not null || readAgentStatus is not null);
        ReadQubeFile = Deep ? readQubeFile : null;
        ReadAgentStatus = Deep ? readAgentStatus : null;
    }

    /// <summary>
    /// The context Test-QubeFirewall audits with: dom0 facts from <paramref name="backend"/> (its inventory and rule lists);
    /// when <paramref name="deep"/>, also the qubes' hook files and their agents' status (live: one qvm-run each). Not deep,
    /// nothing is read from any qube.
    /// </summary>
    public static AuditContext Of(IQubesBackend backend, DateTimeOffset now, bool deep) =>
        new(backend.GetInventory(), backend.GetFirewall, now, backend.ReadQubeFile, q => AgentStatus.Read(backend, q), deep);

    public QubesInventory Inventory { get; }

    public DateTimeOffset Now { get; }

    /// <summary>Whether the checks that read inside qubes run (Test-QubeFirewall -Deep); without it the audit reads dom0 facts only.</summary>
    public bool Deep { get; }

    /// <summary>Reads a file of a qube's persistent storage (qube, path) → content or null; null when not <see cref="Deep"/>.</summary>
    public Func<string, string, string?>? ReadQubeFile { get; }

    /// <summary>Reads a qube's agent status (<see cref="AgentStatus.Read"/>); null when not <see cref="Deep"/>.</summary>
    public Func<Qube, AgentStatusReading>? ReadAgentStatus { get; }

    /// <summary>A qube's stored rule list (expired rules included); throws what the reader throws.</summary>
    public FirewallDocument Firewall(string vmName)
    {
        if (!_firewalls.TryGetValue(vmName, out var doc)) _firewalls[vmName] = doc = _readFirewall(vmName);
        return doc;
    }

    /// <summary>The rules qubesd's Get shows (expired ones left out), numbered from 0.</summary>
    public IReadOnlyList<QubeFirewallRule> VisibleRules(string vmName) => QubeFirewallRule.Visible(vmName, Firewall(vmName).Rules, Now);

    /// <summary>The qube's network qube, or null.</summary>
    public Qube? NetVmOf(Qube qube) => qube.NetVM is { } n ? Inventory.Find(n) : null;

    public NetVmEnforcement EnforcementOf(Qube netvm) => Enforcement.OfNetVm(Inventory, netvm);
}

/// <summary>
/// Test-QubeFirewall's engine: for each qube, what in its firewall will not work as the user thinks.
/// Pure and deterministic: the same context gives the same findings, in the same order (qube by
/// qube as asked; per qube the checks in a fixed order, each in rule order).
/// Who enforces a qube's rules is decided in one place, <see cref="Enforcement"/>.
/// </summary>
public static partial class FirewallAudit
{
    /// <summary>Rules that expire within this time get a warning.</summary>
    public static readonly TimeSpan ExpiryWarning = TimeSpan.FromDays(1);

    /// <summary>The built-in checks, in the order their findings come out for a qube.</summary>
    public static IReadOnlyList<IAuditCheck> BuiltInChecks { get; } =
    [
        new Check("enforcement", Enforcement),
        new Check("ipv6-uplink", IPv6Uplink),
        new Check("invalid-rules", InvalidRules, EvenWithoutNetVm: true),
        new Check("dead-rules", DeadRules),
        new Check("host-names", HostNames),
        new Check("zero-prefix", ZeroPrefixes),
        new Check("ipv6-rules", IPv6Rules),
        new Check("expiry", Expiry),
        new Check("qube-manager", QubeManager),
    ];

    /// <summary>The built-in checks, the port forward checks (<see cref="ForwardAuditChecks"/>), then the extension checks (<see cref="AddExtensionChecks"/>).</summary>
    public static IReadOnlyList<IAuditCheck> DefaultChecks()
    {
        var checks = new List<IAuditCheck>(BuiltInChecks);
        checks.AddRange(ForwardAuditChecks.All);
        checks.Add(new DeclarationOwnershipCheck());
        AddExtensionChecks(checks);
        return checks;
    }

    /// <summary>
    /// The extension point for checks that live in other files of the engine (port forwards, inter-qube
    /// links): implement this partial method there and append to <paramref name="checks"/>.
    /// </summary>
    static partial void AddExtensionChecks(List<IAuditCheck> checks);

    /// <summary>
    /// The qubes audited when none are named, in qubes.xml order: every qube with a network qube, and every other one that has
    /// a feature of the module's (sys-net, the outermost hop of every forward, has no netvm but carries agent keys that can go stale).
    /// </summary>
    public static IReadOnlyList<Qube> DefaultTargets(QubesInventory inventory) =>
        inventory.Qubes.Where(q => q.NetVM is not null || (q.Class != QubeClass.AdminVM && q.Features.Keys.Any(OwnFeatures.IsOwn))).ToList();

    /// <summary>Audits the qubes in the order given; <paramref name="checks"/> defaults to <see cref="DefaultChecks"/>.</summary>
    public static IReadOnlyList<AuditFinding> Run(AuditContext context, IEnumerable<Qube> qubes, IEnumerable<IAuditCheck>? checks = null)
    {
        var list = (checks ?? DefaultChecks()).ToList();
        var findings = new List<AuditFinding>();
        foreach (var qube in qubes) findings.AddRange(Audit(context, qube, list));
        return findings;
    }

    /// <summary>The findings for one qube. A rule list that cannot be read gives one Error and no rule checks.</summary>
    public static IReadOnlyList<AuditFinding> Audit(AuditContext context, Qube qube, IEnumerable<IAuditCheck>? checks = null)
    {
        var findings = new List<AuditFinding>();
        if (qube.Class == QubeClass.AdminVM) return findings; // dom0 has no Qubes firewall
        var readable = true;
        try
        {
            context.Firewall(qube.Name);
        }
        catch (QubesFirewallException ex)
        {
            readable = false;
            findings.Add(new AuditFinding(AuditSeverity.Error, qube.Name, AuditChecks.UnreadableFirewall, null,
                $"The firewall rules of '{qube.Name}' cannot be read: {ex.Message} qubesd cannot load such a list either. Fix or remove {qube.RelativeDirectory ?? "appvms/" + qube.Name}/firewall.xml in dom0 (removing it restores the default: accept everything), then restart qubesd (sudo systemctl restart qubesd).",
                null));
        }
        if (qube.NetVM is null)
            findings.Add(new AuditFinding(AuditSeverity.Info, qube.Name, AuditChecks.NoNetVM, null, Planning.Enforcement.Of(context.Inventory, qube).Message, null));
        foreach (var check in checks ?? DefaultChecks())
        {
            var builtIn = check is Check;
            if (builtIn && !readable) continue;
            if (check is Check { EvenWithoutNetVm: false } && qube.NetVM is null) continue; // unnetworked: only rules qubesd refuses matter
            // A check that cannot finish (a file it reads in a qube that is not running, say) is a finding, not the end of the audit.
            var found = new List<AuditFinding>();
            try
            {
                found.AddRange(check.Run(context, qube));
            }
            catch (QubesFirewallException ex)
            {
                found.Add(new AuditFinding(AuditSeverity.Warning, qube.Name, AuditChecks.CheckFailed, null,
                    $"The check '{check.Name}' could not finish for '{qube.Name}': {ex.Message} Fix what that says, then run Test-QubeFirewall again.", null));
            }
            findings.AddRange(found);
        }
        return findings;
    }

    private sealed record Check(string Name, Func<AuditContext, Qube, IEnumerable<AuditFinding>> Body, bool EvenWithoutNetVm = false) : IAuditCheck
    {
        public IEnumerable<AuditFinding> Run(AuditContext context, Qube qube) => Body(context, qube);
    }

    // ------------------------------------------------------------------ enforcement

    private static IEnumerable<AuditFinding> Enforcement(AuditContext context, Qube qube)
    {
        var who = Planning.Enforcement.Of(context.Inventory, qube);
        if (who.Enforced)
        {
            yield return new AuditFinding(AuditSeverity.Info, qube.Name, AuditChecks.EnforcedIn, null, who.Message, null);
            yield break;
        }
        if (!who.NetVmExists)
        {
            yield return new AuditFinding(AuditSeverity.Error, qube.Name, AuditChecks.NotEnforced, null, who.Message, who.Fix);
            yield break;
        }
        var visible = context.VisibleRules(qube.Name).Select(r => r.Rule).ToList();
        if (RestrictsNothing(visible))
            yield return new AuditFinding(AuditSeverity.Info, qube.Name, AuditChecks.NotEnforced, null,
                who.Message + " Its list accepts everything, so nothing is lost today; a rule added later would not be enforced either.", who.Fix);
        else
            yield return new AuditFinding(AuditSeverity.Error, qube.Name, AuditChecks.NotEnforced, null,
                who.Message + $" What the list drops passes through '{who.NetVM}' unfiltered.", who.Fix);
    }

    /// <summary>True when the list lets everything through anyway: accept rules up to a lasting accept-all.</summary>
    internal static bool RestrictsNothing(IReadOnlyList<FirewallRule> visible)
    {
        foreach (var rule in visible)
        {
            if (rule.Action != RuleAction.Accept) return false;
            if (rule.IsCatchAll && rule.Expire is null) return true;
        }
        return false; // no lasting catch-all: qubesd's policy drops the rest
    }

    private static IEnumerable<AuditFinding> IPv6Uplink(AuditContext context, Qube qube)
    {
        if (qube.IPv6 is null || context.NetVmOf(qube) is not { } netvm || netvm.IPv6 is not null) yield break;
        var decided = IPv6Planner.Decide(context.Inventory, qube).DecidedBy ?? qube.Name;
        var top = IPv6Planner.TopOf(context.Inventory, qube).Name;
        yield return new AuditFinding(AuditSeverity.Warning, qube.Name, AuditChecks.IPv6WithoutUplink, null,
            $"'{qube.Name}' has an IPv6 address ({qube.IPv6}, from the ipv6 feature of '{decided}'), but its network qube '{netvm.Name}' has IPv6 off: '{qube.Name}' has no IPv6 gateway, so no IPv6 connection. The fix turns IPv6 on where the chain starts, '{top}' (the chain inherits it); to drop IPv6 here instead: Set-QubeIPv6 -VMName {decided} -Inherit.",
            $"Set-QubeIPv6 -VMName {FixCommand.Name(top)} -Enabled $true");
    }

    // ------------------------------------------------------------------ rules

    private static IEnumerable<AuditFinding> InvalidRules(AuditContext context, Qube qube)
    {
        var rules = context.VisibleRules(qube.Name);
        var valid = rules.Where(r => r.Rule.IsValid).Select(r => r.Rule).ToList();
        var invalid = rules.Count - valid.Count;
        // Every invalid rule goes in one Set (a list still holding one is refused); an all-invalid list cannot be fixed that way.
        var fix = valid.Count > 0 ? FirewallSet.Command(qube.Name, valid) : null;
        foreach (var r in rules)
        {
            if (r.Rule.IsValid) continue;
            yield return new AuditFinding(AuditSeverity.Error, qube.Name, AuditChecks.InvalidRule, r,
                $"Rule {r.Number} ('{r.Text}') is refused by today's qubesd: {string.Join("; ", r.Problems)}. An older qubesd let it in; R4.3's qubesd refuses it (and an empty host has crashed qubesd's Get and kept sys-firewall from starting), and every change of this list through qubesd, which sends the whole list, fails while it is there. "
                + (fix is null ? "No rule of the list is valid: set a new list with Set-QubeFirewallRule." : $"The fix sets the list without {(invalid == 1 ? "it" : $"the {invalid} invalid rules")}; add {(invalid == 1 ? "it" : "them")} back with valid values."),
                fix);
        }
    }

    private static IEnumerable<AuditFinding> DeadRules(AuditContext context, Qube qube)
    {
        var rules = context.VisibleRules(qube.Name);
        // The first lasting catch-all ends the list: nothing after it is ever looked at. One with an
        // expiry (the Qube Manager's "allow everything for N minutes") only shadows until it expires.
        var stop = -1;
        for (var i = 0; i < rules.Count; i++)
            if (rules[i].Rule.IsCatchAll && rules[i].Rule.Expire is null) { stop = i; break; }
        if (stop < 0) yield break;
        var catchAll = rules[stop];
        var verb = catchAll.Action == RuleAction.Accept ? "accepts" : "drops";

        // Rules to move in front of the catch-all: another action, and no earlier copy.
        var kinds = new List<(QubeFirewallRule Rule, string Kind, int? Earlier)>();
        for (var i = stop + 1; i < rules.Count; i++)
        {
            var r = rules[i];
            var earlier = rules.Take(i).FirstOrDefault(x => x.Text == r.Text);
            if (earlier is not null) kinds.Add((r, "duplicate", earlier.Number));
            else if (r.Action == catchAll.Action) kinds.Add((r, "same-action", null));
            else if (r.Rule.IsCatchAll) kinds.Add((r, "catch-all", null));
            else kinds.Add((r, "move", null));
        }
        var movable = kinds.Where(k => k.Kind == "move").Select(k => k.Rule).ToList();
        // The moved rules go in front of the catch-all; copies of earlier rules are left out (a Set takes each rule once).
        var moved = new HashSet<QubeFirewallRule>(movable.Concat(kinds.Where(k => k.Kind == "duplicate").Select(k => k.Rule)));
        var moveFix = movable.Count == 0 ? null
            : FirewallSet.Command(qube.Name, rules.Take(stop).Concat(movable).Concat(rules.Skip(stop).Where(r => !moved.Contains(r))).Select(r => r.Rule));
        var before = $"rule {stop} ('{catchAll.Text}') before it {verb} everything, and the first rule that matches decides";
        foreach (var (r, kind, earlier) in kinds)
        {
            yield return kind switch
            {
                "move" => new AuditFinding(AuditSeverity.Error, qube.Name, AuditChecks.DeadRule, r,
                    $"Rule {r.Number} never applies: {before}. 'qvm-firewall {qube.Name} add' without --before puts a new rule there, after the catch-all. "
                    + (movable.Count > 1 ? $"The fix moves all {movable.Count} such rules in front of rule {stop}, in their order." : $"The fix moves it in front of rule {stop}."),
                    moveFix),
                "catch-all" => new AuditFinding(AuditSeverity.Error, qube.Name, AuditChecks.DeadRule, r,
                    $"Rule {r.Number} ('{r.Text}') never applies: {before}. If it was meant to replace rule {stop}, remove rule {stop} instead.",
                    Without(rules, r)),
                "duplicate" => new AuditFinding(AuditSeverity.Info, qube.Name, AuditChecks.DeadRule, r,
                    $"Rule {r.Number} never applies (it comes after the catch-all rule {stop}) and repeats rule {earlier}: it has no effect.",
                    Without(rules, r)),
                _ => new AuditFinding(AuditSeverity.Info, qube.Name, AuditChecks.DeadRule, r,
                    $"Rule {r.Number} never applies (it comes after the catch-all rule {stop}, which {verb} everything), and it would {(r.Action == RuleAction.Accept ? "accept" : "drop")} too: it has no effect.",
                    Without(rules, r)),
            };
        }
    }

    private static IEnumerable<AuditFinding> HostNames(AuditContext context, Qube qube)
    {
        var netvm = qube.NetVM!;
        foreach (var r in context.VisibleRules(qube.Name))
        {
            if (r.Rule.DstHost is not { Kind: HostKind.Name } host) continue;
            var ipv6 = qube.IPv6 is null ? "" :
                $" '{qube.Name}' has IPv6, so the name is also looked up for IPv6: a name without an IPv6 (AAAA) address makes '{netvm}' reject all of its IPv6 traffic.";
            var replacement = r.Text.Replace("dsthost=" + host.Value, "dst4=<address>/32", StringComparison.Ordinal);
            // No Fix: only the user knows the host's addresses.
            yield return new AuditFinding(AuditSeverity.Warning, qube.Name, AuditChecks.HostName, r,
                $"Rule {r.Number} names the host '{host.Value}'. It is resolved once, inside '{netvm}', when the rules are applied (at the qube's start and on each reload), not per connection: addresses the name gets later are not covered, and if the name does not resolve at that moment, '{netvm}' rejects ALL of '{qube.Name}''s traffic until the next reload.{ipv6} "
                + $"If the host has fixed addresses, put them in its place ('{replacement}', one rule per address, or their network, with Set-QubeFirewallRule); otherwise make sure '{netvm}' can resolve it whenever the rules are applied.",
                null);
        }
    }

    private static IEnumerable<AuditFinding> ZeroPrefixes(AuditContext context, Qube qube)
    {
        foreach (var r in context.VisibleRules(qube.Name))
        {
            if (r.Rule.DstHost is not { IsAddress: true, PrefixLength: 0 } host) continue;
            var family = host.Kind == HostKind.IPv6 ? "IPv6" : "IPv4";
            var anyHost = r.Rule with { DstHost = null };
            yield return new AuditFinding(AuditSeverity.Warning, qube.Name, AuditChecks.ZeroPrefix, r,
                $"Rule {r.Number} has the network '{host.Value}': a /0 prefix keeps no bit of the address, so it matches every {family} host. And qvm-firewall and the Qube Manager (qubesadmin) leave out a /0 address when they write the list back, which turns it into a rule for every host, IPv4 and IPv6 alike (qubes-issues 9323). "
                + "The fix leaves the host out (the rule then is for every host, as it is in effect); for one network, give it its real prefix (for example /24 or /64) instead.",
                FirewallSet.Command(qube.Name, context.VisibleRules(qube.Name).Select(x => x.Number == r.Number ? anyHost : x.Rule)));
        }
    }

    private static IEnumerable<AuditFinding> IPv6Rules(AuditContext context, Qube qube)
    {
        if (qube.IPv6 is not null) yield break;
        foreach (var r in context.VisibleRules(qube.Name))
        {
            if (r.Rule.DstHost is not { Kind: HostKind.IPv6 }) continue;
            var top = IPv6Planner.TopOf(context.Inventory, qube).Name;
            yield return new AuditFinding(r.Action == RuleAction.Accept ? AuditSeverity.Warning : AuditSeverity.Info, qube.Name, AuditChecks.IPv6Rule, r,
                $"Rule {r.Number} is for IPv6 ({r.Rule.DstHost!.Value}), but '{qube.Name}' has no IPv6 address (IPv6 is off along its netvm chain): qubesd sends the rule to no one, so it has no effect"
                + (r.Action == RuleAction.Accept ? " and that IPv6 host stays unreachable." : " (there is no IPv6 traffic to drop).")
                + $" The fix removes the rule; to use IPv6 instead, turn it on where the chain starts: Set-QubeIPv6 -VMName {top} -Enabled $true.",
                Without(context.VisibleRules(qube.Name), r));
        }
    }

    private static IEnumerable<AuditFinding> Expiry(AuditContext context, Qube qube)
    {
        var now = context.Now;
        var netvm = qube.NetVM!;
        foreach (var rule in context.Firewall(qube.Name).Rules)
        {
            if (!rule.IsExpiredAt(now)) continue;
            yield return new AuditFinding(AuditSeverity.Info, qube.Name, AuditChecks.Expired, null,
                $"The rule '{rule.Text}' expired on {FormatTime(rule.ExpireTime!.Value)}: qubesd no longer sends it to '{netvm}', leaves it out of the list and drops it from firewall.xml at its next save. "
                + $"Nothing to do if it was meant to end; to have it for another week, add '{WithExpire(rule, "+604800")}' again.",
                null);
        }
        foreach (var r in context.VisibleRules(qube.Name))
        {
            if (r.Rule.ExpireTime is not { } expire || expire - now > ExpiryWarning) continue;
            var effect = r.Action == RuleAction.Accept ? "what it accepts falls to the rules after it" : "what it drops falls to the rules after it";
            yield return new AuditFinding(AuditSeverity.Warning, qube.Name, AuditChecks.ExpiresSoon, r,
                $"Rule {r.Number} expires on {FormatTime(expire)}, in {FormatSpan(expire - now)}: then qubesd stops sending it to '{netvm}', and {effect}. "
                + $"Nothing to do if it is meant to end; to keep it a week longer, put '{WithExpire(r.Rule, "+604800")}' in its place (Set-QubeFirewallRule).",
                null);
        }
    }

    // ------------------------------------------------------------------ the Qube Manager's firewall tab

    private static IEnumerable<AuditFinding> QubeManager(AuditContext context, Qube qube)
    {
        var rules = context.VisibleRules(qube.Name);
        var (problem, rule, fix) = QubeManagerProblem(qube.Name, rules);
        if (problem is null) yield break;
        yield return new AuditFinding(AuditSeverity.Info, qube.Name, AuditChecks.QubeManagerShape, rule,
            $"The Qube Manager's firewall tab cannot show this list ({problem}): it says \"Firewall has been modified manually\" and disables its controls for '{qube.Name}'. qvm-firewall and this module handle it"
            + (fix is null
                ? ": nothing to do if you manage these rules with them. For the tab, the list may hold only accept rules for hosts, protocols and ports (no comment needed), the plain 'accept dns' and 'accept icmp' rules, at most a bare accept with an expiry, and must end in a plain 'accept' or 'drop'."
                : ". The fix adds the missing rules in front of the final drop (DNS and ICMP are then allowed)."),
            fix);
    }

    /// <summary>
    /// The Qube Manager's <c>get_firewall_conf</c> (qubes-manager <c>qubesmanager/firewall.py</c>), on the rules
    /// qubesd's Get returns, as qubesadmin compares them (by their text, comment and expiry included, with a /0
    /// address left out): the last rule must be exactly <c>action=accept</c> or <c>action=drop</c>; walking the
    /// others backwards, exactly <c>accept dns</c> and <c>accept icmp</c> are recognized; any other rule with a
    /// special target or ICMP type is refused; a rule with a host or protocol and no expiry must accept; a rule
    /// with an expiry and neither host nor protocol is the temporary full access; anything else does not add up.
    /// A list ending in drop must hold both <c>accept dns</c> and <c>accept icmp</c>. Null when the tab can show it.
    /// </summary>
    public static (string? Problem, QubeFirewallRule? Rule, string? Fix) QubeManagerProblem(string vmName, IReadOnlyList<QubeFirewallRule> rules)
    {
        if (rules.Count == 0) return ("it has no rule; the tab needs at least one", null, null);
        var last = rules[^1];
        if (!IsPlain(last.Rule, RuleAction.Accept) && !IsPlain(last.Rule, RuleAction.Drop))
            return ($"its last rule, {last.Number} ('{last.Text}'), is not a plain 'action=accept' or 'action=drop' without comment or expiry", last, null);
        bool dns = false, icmp = false;
        for (var i = rules.Count - 2; i >= 0; i--)
        {
            var r = rules[i];
            var x = r.Rule;
            if (IsPlainDns(x)) { dns = true; continue; }
            if (IsPlainIcmp(x)) { icmp = true; continue; }
            if (x.SpecialTarget is not null || x.IcmpType is not null)
                return ($"rule {r.Number} ('{r.Text}') has a special target or ICMP type and is not the plain 'action=accept specialtarget=dns' or 'action=accept proto=icmp'", r, null);
            var hasHost = x.DstHost is not null || x.RawDstHost is not null;
            if ((hasHost || x.Protocol is not null) && x.Expire is null)
            {
                if (x.Action == RuleAction.Accept) continue;
                return ($"rule {r.Number} ('{r.Text}') drops: the tab has only accept rules in front of the final rule", r, null);
            }
            if (x.Expire is not null && !hasHost && x.Protocol is null) continue; // temporary full access
            return ($"rule {r.Number} ('{r.Text}') is none of the kinds the tab knows", r, null);
        }
        if (last.Action == RuleAction.Drop && !(dns && icmp))
        {
            var missing = new List<string>();
            if (!dns) missing.Add("'action=accept specialtarget=dns'");
            if (!icmp) missing.Add("'action=accept proto=icmp'");
            return ($"it ends in drop without {string.Join(" and ", missing)}", null,
                $"{string.Join(", ", missing)} | Add-QubeFirewallRule -VMName {FixCommand.Name(vmName)}");
        }
        return (null, null, null);
    }

    // qubesadmin drops a /0 address from the rule's text, so such a rule compares equal to one without host.
    private static bool HasClientHost(FirewallRule r) =>
        r.RawDstHost is not null || (r.DstHost is { } h && !(h.IsAddress && h.PrefixLength == 0));

    private static bool NothingElse(FirewallRule r) =>
        r.Expire is null && r.Comment is null && r.DstPorts is null && r.IcmpType is null && !HasClientHost(r);

    private static bool IsPlain(FirewallRule r, RuleAction action) =>
        r.Action == action && r.Protocol is null && r.SpecialTarget is null && NothingElse(r);

    private static bool IsPlainDns(FirewallRule r) =>
        r.Action == RuleAction.Accept && r.SpecialTarget == SpecialTarget.Dns && r.Protocol is null && NothingElse(r);

    private static bool IsPlainIcmp(FirewallRule r) =>
        r.Action == RuleAction.Accept && r.Protocol == RuleProtocol.Icmp && r.SpecialTarget is null && NothingElse(r);

    // ------------------------------------------------------------------ fixes

    /// <summary>Sets the list without this rule; null when it is the only one (an empty list is no fix).</summary>
    internal static string? Without(IReadOnlyList<QubeFirewallRule> rules, QubeFirewallRule r) =>
        rules.Count <= 1 ? null : FirewallSet.Command(r.VMName, rules.Where(x => x.Number != r.Number).Select(x => x.Rule));

    /// <summary>The rule's text with another expire value (e.g. "+604800": seconds from when it is added).</summary>
    internal static string WithExpire(FirewallRule rule, string expire)
    {
        var text = (rule with { Expire = null }).Text;
        var space = text.IndexOf(' ');
        return space < 0 ? $"{text} expire={expire}" : $"{text[..space]} expire={expire}{text[space..]}";
    }

    private static string FormatTime(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss 'UTC'", CultureInfo.InvariantCulture);

    private static string FormatSpan(TimeSpan span)
    {
        if (span < TimeSpan.FromMinutes(1)) return "less than a minute";
        var hours = (int)span.TotalHours;
        var minutes = span.Minutes;
        return hours > 0 ? $"{hours} h {minutes} min" : $"{minutes} min";
    }
}
