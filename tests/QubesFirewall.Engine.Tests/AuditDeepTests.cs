using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Engine.Tests.Deployment;

namespace QubesFirewall.Engine.Tests;

/// <summary>
/// Test-QubeFirewall reads dom0 facts only; -Deep (<see cref="AuditContext.Of"/> with deep) also asks each running qube that
/// records the agent for its status, and reads the hook files for blocks of earlier versions. On the sample root (sys-net,
/// sys-firewall, work, personal running and recording the agent; untrusted recording it, halted), through a backend that
/// answers the agents' status reads as told and, when <see cref="AskingBackend.Forbidden"/>, fails the test on any read inside a qube.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class AuditDeepTests : IDisposable
{
    private static readonly PortForward Web = PortForward.Create("work", ForwardProtocol.Tcp, 443, 8443, allowFrom: ["192.168.1.0/24"]);
    private readonly TempRoot _root = new();
    private readonly AskingBackend _backend;

    public AuditDeepTests()
    {
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, PortForwardPlanner.PlanAdd(_root.Backend, Web, DeploymentOptions.For(_root.Backend, _root.Now))).Failure);
        _backend = new AskingBackend(_root.Backend);
    }

    public void Dispose() => _root.Dispose();

    /// <summary>A qube's agent status line, as the agent writes it.</summary>
    private static string Status(string state, string gen, string applied, string msg = "") => $"state={state} gen={gen} applied={applied} version={AgentScript.Version} msg={msg}\n";

    private string GenOf(string qube)
    {
        var value = _root.Backend.GetInventory().Get(qube).Features[AgentFeatures.GenFeature]; // "for=<qube> gen=<16 hex> keys=<n>"
        return value.Split(' ')[1]["gen=".Length..];
    }

    private List<AuditFinding> Audit(bool deep, params string[] qubes)
    {
        var context = AuditContext.Of(_backend, _root.Now, deep);
        return FirewallAudit.Run(context, qubes.Length == 0 ? FirewallAudit.DefaultTargets(context.Inventory) : qubes.Select(context.Inventory.Get)).ToList();
    }

    private static readonly string[] AgentStatusChecks = [AgentStatusCheck.AgentFailed, AgentStatusCheck.AgentBehind, AgentStatusCheck.AgentNoStatus, AgentStatusCheck.AgentStatusNotRead];

    /// <summary>The block an earlier version wrote into sys-net's hook file for the forward (as Export-QubeFirewallScript renders it).</summary>
    private void EarlierVersionBlockInSysNet()
    {
        var script = PortForwardPlanner.Export(_root.Backend.GetInventory(), "sys-net")!;
        _root.Backend.WriteQubeFile(script.StoredIn, script.Path, ManagedBlock.Upsert("#!/bin/sh\n# mine\n", script.Script), ManagedBlock.FileMode);
    }

    [Fact]
    public void Without_Deep_nothing_is_read_from_any_qube_and_every_dom0_check_still_runs()
    {
        EarlierVersionBlockInSysNet();
        _backend.Answers["sys-net"] = Status("failed", GenOf("sys-net"), "none", "nft refused the rules");
        _root.Backend.RemoveFeature("personal", AgentScript.VersionFeature);
        _root.Backend.SetFeature("personal", "vm-config.qubesfw.hop4.00022.tcp.0123456789", "for=personal gen=0123456789abcdef proto=tcp"); // a stray key
        _backend.Forbidden = true;

        var plain = Audit(deep: false).Concat(Audit(deep: false, "sys-net")).ToList();
        Assert.Empty(_backend.Reads);
        Assert.DoesNotContain(plain, f => f.Check == ForwardAuditChecks.UndeclaredPart || f.Check == AuditChecks.CheckFailed || AgentStatusChecks.Contains(f.Check));
        // the dom0 facts are all still judged: the stray key, and the qube carrying keys without the agent
        Assert.Contains(plain, f => (f.VMName, f.Check, f.Severity) == ("personal", AgentAuditCheck.AgentKeysStale, AuditSeverity.Error));
        var missing = Assert.Single(plain, f => f.Check == AgentAuditCheck.AgentMissing);
        Assert.Equal(("personal", "Install-QubeFirewallAgent -VMName personal"), (missing.VMName, missing.Fix));
        Assert.Contains("removes any managed block an earlier version left in the qube's hook files", missing.Message);

        // the same audit, deep: the hook file and the agent's status are read, and both are findings
        _backend.Forbidden = false;
        var deep = Audit(deep: true).Concat(Audit(deep: true, "sys-net")).ToList();
        Assert.NotEmpty(_backend.Reads);
        Assert.Contains(deep, f => (f.VMName, f.Check) == ("work", ForwardAuditChecks.UndeclaredPart));
        Assert.Contains(deep, f => (f.VMName, f.Check) == ("sys-net", AgentStatusCheck.AgentFailed));
    }

    [Fact]
    public void Deep_asks_each_running_qube_that_records_the_agent_once_and_skips_a_halted_one_at_Info()
    {
        var findings = Audit(deep: true, "sys-net", "sys-firewall", "work", "personal", "untrusted", "anon-whonix", "sys-usb");
        // every agent answers with the generation its keys carry: no finding but the halted qube's
        var status = Assert.Single(findings, f => AgentStatusChecks.Contains(f.Check));
        Assert.Equal(("untrusted", AuditSeverity.Info, AgentStatusCheck.AgentStatusNotRead, (string?)null), (status.VMName, status.Severity, status.Check, status.Fix));
        Assert.Contains("'untrusted' is not running", status.Message);
        // anon-whonix and sys-usb record no agent: not asked
        Assert.Equal(["personal", "sys-firewall", "sys-net", "work"], _backend.Reads.Where(r => r.What == "status").Select(r => r.Qube).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Deep_reports_an_agent_that_failed_with_its_message_and_the_fix_that_starts_it_again()
    {
        _backend.Answers["sys-net"] = Status("failed", GenOf("sys-net"), "none", "nft refused the rules; the previous ones are unchanged: Error: Could not process rule");
        var f = Assert.Single(Audit(deep: true, "sys-net"), x => AgentStatusChecks.Contains(x.Check));
        Assert.Equal((AuditSeverity.Error, "sys-net", AgentStatusCheck.AgentFailed), (f.Severity, f.VMName, f.Check));
        Assert.Contains($"reports failed for generation {GenOf("sys-net")}: nft refused the rules; the previous ones are unchanged: Error: Could not process rule", f.Message);
        Assert.Equal("Install-QubeFirewallAgent -VMName sys-net", f.Fix);

        // partial: applied but for the refused keys
        _backend.Answers["sys-net"] = Status("partial", GenOf("sys-net"), GenOf("sys-net"), "refused: qubesfw.hop4.x (bad); the other keys are applied");
        f = Assert.Single(Audit(deep: true, "sys-net"), x => AgentStatusChecks.Contains(x.Check));
        Assert.Equal(AgentStatusCheck.AgentFailed, f.Check);
        Assert.Contains("the refused ones are not enforced", f.Message);
    }

    [Fact]
    public void Deep_reports_an_agent_behind_the_generation_dom0_gives_it_and_the_fix_follows_the_keys()
    {
        const string old = "00112233445566aa";
        _backend.Answers["sys-firewall"] = Status("applied", old, old, "1 keys");
        var f = Assert.Single(Audit(deep: true, "sys-firewall"), x => AgentStatusChecks.Contains(x.Check));
        Assert.Equal((AuditSeverity.Error, "sys-firewall", AgentStatusCheck.AgentBehind), (f.Severity, f.VMName, f.Check));
        Assert.Contains($"applied generation {old}, but dom0 gives it {GenOf("sys-firewall")}", f.Message);
        Assert.Equal("Install-QubeFirewallAgent -VMName sys-firewall", f.Fix);

        // keys that are not what the declarations derive are repaired in dom0 first
        var key = _root.Backend.GetInventory().Get("sys-firewall").Features.Keys.First(k => k.StartsWith("vm-config.qubesfw.hop4.", StringComparison.Ordinal));
        _root.Backend.RemoveFeature("sys-firewall", key);
        f = Assert.Single(Audit(deep: true, "sys-firewall"), x => AgentStatusChecks.Contains(x.Check));
        Assert.Equal((AgentStatusCheck.AgentBehind, "Sync-QubeFirewall -VMName sys-firewall"), (f.Check, f.Fix));

        // waiting for a whole set with the right generation seen but not applied is behind too
        _backend.Answers["work"] = Status("waiting", GenOf("work"), old, "qubesfw.gen counts 2 keys, 1 present: waiting for the whole set");
        f = Assert.Single(Audit(deep: true, "work"), x => AgentStatusChecks.Contains(x.Check));
        Assert.Equal(AgentStatusCheck.AgentBehind, f.Check);
        Assert.Contains("waiting for the whole set", f.Message);
    }

    [Fact]
    public void Deep_reports_no_status_and_an_answer_outside_the_grammar_escaped()
    {
        _backend.Answers["work"] = "state=none\n";
        var f = Assert.Single(Audit(deep: true, "work"), x => AgentStatusChecks.Contains(x.Check));
        Assert.Equal((AuditSeverity.Error, AgentStatusCheck.AgentNoStatus, "Install-QubeFirewallAgent -VMName work"), (f.Severity, f.Check, f.Fix));
        Assert.Contains("the agent has not run since the qube started", f.Message);

        _backend.Answers["work"] = "state=applied gen=\u001b]0;owned\u0007 \u009b2J\n";
        f = Assert.Single(Audit(deep: true, "work"), x => AgentStatusChecks.Contains(x.Check));
        Assert.Equal((AuditSeverity.Error, AgentStatusCheck.AgentNoStatus, (string?)null), (f.Severity, f.Check, f.Fix));
        Assert.Contains("not an agent status: state=applied gen=\\x1b]0;owned\\x07 \\x9b2J", f.Message);
        Assert.DoesNotContain(f.Message, char.IsControl);

        // a read that fails (a qube answering too much) is a finding, not the end of the audit
        _backend.Answers["work"] = null;
        f = Assert.Single(Audit(deep: true, "work"), x => AgentStatusChecks.Contains(x.Check));
        Assert.Equal((AuditSeverity.Error, AgentStatusCheck.AgentNoStatus), (f.Severity, f.Check));
        Assert.Contains("could not be read: 'work' answered too much. A compromised or broken qube can answer anything", f.Message);
    }

    [Fact]
    public void Deep_on_the_offline_root_reads_the_hook_files_and_says_the_agents_cannot_be_asked()
    {
        EarlierVersionBlockInSysNet();
        var context = AuditContext.Of(_root.Backend, _root.Now, deep: true);
        var findings = FirewallAudit.Run(context, [context.Inventory.Get("work")]);
        Assert.Contains(findings, f => f.Check == ForwardAuditChecks.UndeclaredPart);
        var notRead = Assert.Single(findings, f => AgentStatusChecks.Contains(f.Check));
        Assert.Equal((AuditSeverity.Info, AgentStatusCheck.AgentStatusNotRead), (notRead.Severity, notRead.Check));
        Assert.Contains("the offline root runs no qube", notRead.Message);
    }

    /// <summary>
    /// The offline root, but answering each running qube's agent status read: by default that it applied the generation its
    /// keys carry; <see cref="Answers"/> a line of the test's own (null: the read fails as on a qube answering too much).
    /// </summary>
    private sealed class AskingBackend(OfflineRoot root) : DelegatingBackend(root)
    {
        public bool Forbidden { get; set; }

        public Dictionary<string, string?> Answers { get; } = new(StringComparer.Ordinal);

        public List<(string Qube, string What)> Reads { get; } = [];

        public override string? ReadQubeFile(string vmName, string path)
        {
            if (Forbidden) throw new Xunit.Sdk.XunitException($"read {vmName}:{path} without -Deep");
            Reads.Add((vmName, path));
            return base.ReadQubeFile(vmName, path);
        }

        public override QubeCommandResult RunQubeShellScript(string vmName, string script, string description)
        {
            if (Forbidden) throw new Xunit.Sdk.XunitException($"ran '{description}' in {vmName} without -Deep");
            Assert.Equal(AgentDelivery.StatusCommand, script);
            Reads.Add((vmName, "status"));
            if (!Answers.TryGetValue(vmName, out var answer))
            {
                var gen = root.GetInventory().Get(vmName).Features.GetValueOrDefault(AgentFeatures.GenFeature)?.Split(' ')[1]["gen=".Length..] ?? "none";
                answer = Status("applied", gen, gen, "1 keys");
            }
            if (answer is null) throw new QubesFirewallException("QubeAnswerTooLarge", FailureKind.InvalidData, $"'{vmName}' answered too much.", vmName);
            return new QubeCommandResult(vmName, "(standard input)", 0, answer, Executed: true);
        }
    }
}
