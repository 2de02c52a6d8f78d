using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Tests.Shared;

namespace QubesFirewall.Engine.Tests.Trust;

/// <summary>
/// Declarations bound to their qube's uuid: qvm-clone (and a backup restore, and a disposable) copy every feature,
/// but not the uuid (core-admin qubes/vm/__init__.py lines 250-256, clone=False). A copy is never deployed, never
/// counted, shown with a Problem and reported with two fixes; adopting it is refused only for a conflict it would create.
/// </summary>
public sealed class CopiedDeclarationTests : IDisposable
{
    private readonly TempRoot _root = new();

    public void Dispose() => _root.Dispose();

    private DeploymentOptions Options => DeploymentOptions.For(_root.Backend, _root.Now);

    private QubesInventory Inventory => _root.Backend.GetInventory();

    private void Clone(string source, string clone, int qid) => QubeCloner.Clone(_root.Path, source, clone, qid);

    private void AddForward(PortForward f) => Assert.Null(PortForwardPlanner.Apply(_root.Backend, PortForwardPlanner.PlanAdd(_root.Backend, f, Options)).Failure);

    private static readonly PortForward Web = PortForward.Create("work", ForwardProtocol.Tcp, 443, allowFrom: ["192.168.1.0/24"]);

    [Fact]
    public void A_declaration_carries_its_qubes_uuid()
    {
        AddForward(Web);
        var work = Inventory.Get("work");
        Assert.NotNull(work.Uuid);
        Assert.Equal($"uuid={work.Uuid} target=443 type=external allow=192.168.1.0/24", work.Features[Web.FeatureName]);
        var d = Assert.Single(PortForwardDeclaration.Read(work));
        Assert.Equal((DeclarationOwnership.Bound, Web.Text), (d.Ownership, d.Forward!.Text));
    }

    [Fact]
    public void A_cloned_forward_is_never_deployed_and_shows_with_its_Problem()
    {
        AddForward(Web);
        Clone("work", "work-clone", 90);
        var copy = Assert.Single(PortForwardDeclaration.Read(Inventory.Get("work-clone")));
        Assert.Equal(DeclarationOwnership.Copied, copy.Ownership);
        Assert.Null(copy.Forward);
        Assert.Contains("was copied from another qube", copy.Problem);

        // the next unrelated forward seals sys-net's keys again: one part for tcp/443, to work
        AddForward(PortForward.Create("personal", ForwardProtocol.Tcp, 8080, allowFrom: ["192.168.1.0/24"]));
        var sysNet = Inventory.Get("sys-net").Features.Where(f => Agent.AgentFeatures.IsAgentFeature(f.Key)).Select(f => f.Value).ToList();
        Assert.EndsWith(" vm=work", Assert.Single(sysNet, v => v.Contains(" proto=tcp port=443 ", StringComparison.Ordinal)));
        Assert.DoesNotContain(sysNet, v => v.Contains("work-clone", StringComparison.Ordinal));
        // work-clone is not on its way: the keys qvm-clone copied (for=work, which its agent refuses) go with Sync-QubeFirewall's repair
        Assert.Contains(Inventory.Get("work-clone").Features, f => Agent.AgentFeatures.IsAgentFeature(f.Key) && f.Value.StartsWith("for=work ", StringComparison.Ordinal));
        Assert.Null(Agent.AgentDelivery.RepairPlan(Inventory, Inventory.Get("work-clone")).Apply(_root.Backend).Failure);
        Assert.DoesNotContain(Inventory.Get("work-clone").Features, f => Agent.AgentFeatures.IsAgentFeature(f.Key));

        var listed = PortForwardPlanner.List(Inventory, _root.Now, n => n == "work-clone");
        var shown = Assert.Single(listed);
        Assert.Equal((443, DeclarationOwnership.Copied), (shown.Port, shown.Ownership));
        Assert.Contains("copied", shown.Problem);
    }

    [Fact]
    public void Adopting_a_copy_is_refused_only_for_the_conflict_it_would_create_naming_both_and_removing_it_never()
    {
        AddForward(Web);
        Clone("work", "work-clone", 90);
        var ex = Assert.Throws<QubesFirewallException>(() => PortForwardPlanner.PlanAdd(_root.Backend, Web with { VMName = "work-clone" }, Options));
        Assert.Equal("PortAlreadyForwarded", ex.ErrorId);
        Assert.Contains("'work'", ex.Message);
        Assert.Contains("work-clone", ex.Message);
        // the copy of another port adopts fine: translated to another external port
        var removed = PortForwardPlanner.PlanRemove(_root.Backend, "work-clone", ForwardProtocol.Tcp, 443, Options);
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, removed).Failure);
        Assert.DoesNotContain(Web.FeatureName, Inventory.Get("work-clone").Features.Keys);
        Assert.Contains(Web.FeatureName, Inventory.Get("work").Features.Keys);
    }

    [Fact]
    public void Adopting_a_copy_without_a_conflict_binds_it_to_the_clone()
    {
        AddForward(PortForward.Create("work", ForwardProtocol.Tcp, 8443, type: ForwardType.Internal, allowFrom: ["10.137.0.10"]));
        _root.Backend.RemoveFeature("work", PortForwardFeature.NameFor(ForwardProtocol.Tcp, 8443)); // only the clone keeps it
        Clone("work", "work-clone", 90);
        _root.Backend.SetFeature("work-clone", PortForwardFeature.NameFor(ForwardProtocol.Tcp, 8443),
            DeclarationOwner.Bind(Guid.NewGuid().ToString("D"), "target=8443 type=internal allow=10.137.0.10/32"));
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, PortForward.Create("work-clone", ForwardProtocol.Tcp, 8443, type: ForwardType.Internal, allowFrom: ["10.137.0.10"]), Options);
        Assert.Equal(PlanOperation.Update, plan.Operation);
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, plan).Failure);
        var d = Assert.Single(PortForwardDeclaration.Read(Inventory.Get("work-clone")));
        Assert.Equal(DeclarationOwnership.Bound, d.Ownership);
    }

    [Fact]
    public void A_cloned_binding_gets_no_policy_line()
    {
        var main = TcpBinding.Create("untrusted", "work", 444, 10444, permanent: false);
        Assert.Null(TcpBindingPlanner.Apply(_root.Backend, TcpBindingPlanner.PlanAdd(_root.Backend, main, new DeploymentOptions())).Failure);
        Clone("untrusted", "untrusted-clone", 91);
        var copy = Assert.Single(TcpBindingDeclaration.Read(Inventory.Get("untrusted-clone")));
        Assert.Equal(DeclarationOwnership.Copied, copy.Ownership);
        Assert.Null(copy.Binding);
        // the next unrelated binding change rewrites the policy: no line for the clone
        Assert.Null(TcpBindingPlanner.Apply(_root.Backend, TcpBindingPlanner.PlanAdd(_root.Backend, TcpBinding.Create("personal", "work", 22, 10022, permanent: false), new DeploymentOptions())).Failure);
        var policy = _root.Backend.ReadDom0File(QrexecPolicy.FilePath)!;
        Assert.Contains("untrusted\t@default\tallow target=work", policy);
        Assert.DoesNotContain("untrusted-clone", policy);
        var shown = Assert.Single(TcpBindingPlanner.List(Inventory, n => n == "untrusted-clone"));
        Assert.Equal(DeclarationOwnership.Copied, shown.Ownership);
        Assert.Contains("copied", shown.Problem);
        // removing the copy is never refused, and leaves the original's line
        Assert.Null(TcpBindingPlanner.Apply(_root.Backend, TcpBindingPlanner.PlanRemove(_root.Backend, "untrusted-clone", "work", 444, new DeploymentOptions())).Failure);
        Assert.Contains("untrusted\t@default\tallow target=work", _root.Backend.ReadDom0File(QrexecPolicy.FilePath)!);
    }

    [Fact]
    public void A_cloned_link_opens_nothing_and_shows_with_its_Problem()
    {
        var link = InterVmLink.Create("work", "personal", ForwardProtocol.Tcp, LinkPorts.Parse("5432"));
        Assert.Null(InterVmLinkPlanner.Apply(_root.Backend, InterVmLinkPlanner.PlanEnable(_root.Backend, [link], Options)).Failure);
        Clone("work", "work-clone", 92);
        var copy = Assert.Single(InterVmLinkDeclaration.Read(Inventory.Get("work-clone")));
        Assert.Equal(DeclarationOwnership.Copied, copy.Ownership);
        Assert.Null(copy.Link);
        Assert.DoesNotContain(InterVmLinkPlanner.DeclaredLinks(Inventory), l => l.From == "work-clone");
        var shown = Assert.Single(InterVmLinkPlanner.List(Inventory, null, _root.Now, n => n == "work-clone"));
        Assert.Equal(DeclarationOwnership.Copied, shown.Ownership);
        Assert.Contains("Enable-QubeInterVmNetwork -From work-clone -To personal", shown.Problem);
    }

    [Fact]
    public void Test_QubeFirewall_reports_copies_with_two_fixes()
    {
        AddForward(Web);
        Clone("work", "work-clone", 90);
        var findings = FirewallAudit.Audit(new AuditContext(Inventory, _root.Backend.GetFirewall, _root.Now, _root.Backend.ReadQubeFile), Inventory.Get("work-clone"));
        var f = Assert.Single(findings, f => f.Check == DeclarationOwnershipCheck.Copied);
        Assert.Equal(AuditSeverity.Warning, f.Severity);
        Assert.Contains("Get-QubePortForward -VMName work-clone -Port 443 -Protocol Tcp | Add-QubePortForward", f.Fix);
        Assert.Contains("Remove-QubePortForward -VMName work-clone -Port 443 -Protocol Tcp", f.Fix);
    }

    [Fact]
    public void A_legacy_declaration_is_in_force_listed_and_adopted_by_declaring_it_again()
    {
        _root.Backend.SetFeature("work", Web.FeatureName, Web.FeatureValue); // as an earlier version wrote it
        var d = Assert.Single(PortForwardDeclaration.Read(Inventory.Get("work")));
        Assert.Equal(DeclarationOwnership.Legacy, d.Ownership);
        Assert.NotNull(d.Forward);
        var findings = FirewallAudit.Audit(new AuditContext(Inventory, _root.Backend.GetFirewall, _root.Now, _root.Backend.ReadQubeFile), Inventory.Get("work"));
        Assert.Contains(findings, f => f.Check == DeclarationOwnershipCheck.Legacy);
        var plan = PortForwardPlanner.PlanAdd(_root.Backend, Web, Options);
        Assert.Equal(PlanOperation.Update, plan.Operation);
        Assert.Null(PortForwardPlanner.Apply(_root.Backend, plan).Failure);
        Assert.Equal(DeclarationOwnership.Bound, Assert.Single(PortForwardDeclaration.Read(Inventory.Get("work"))).Ownership);
    }

    [Theory]
    [InlineData("uuid=zz target=443 type=external")]
    [InlineData("uuid=0f4f3e22-0000-4000-8000-00000000000A target=443 type=external")]
    [InlineData("uuid=0f4f3e22-0000-4000-8000-000000000000")]
    public void A_malformed_uuid_word_is_an_invalid_declaration(string value)
    {
        _root.Backend.SetFeature("work", Web.FeatureName, value);
        var d = Assert.Single(PortForwardDeclaration.Read(Inventory.Get("work")));
        Assert.Null(d.Forward);
        Assert.Contains("uuid=", d.Problem);
    }
}
